/**
 * The two checksums Cassandra puts on SSTable chunks and digests: CRC32 (ma and later, and BTI)
 * and Adler-32 (la and lb). Both continue from a previous value so whole files can be checksummed
 * piece by piece.
 */
import * as zlib from 'node:zlib';

import { native } from './native';

export type ChecksumType = 'crc32' | 'adler32';

export interface Checksum {
  readonly type: ChecksumType;
  /** Value of an empty input, to start a running checksum. */
  readonly initial: number;
  /** Extends `previous` (default: start afresh) over `data`. Unsigned 32-bit result. */
  update(data: Uint8Array, previous?: number): number;
}

const crc32: Checksum = {
  type: 'crc32',
  initial: 0,
  update: (data, previous = 0) => zlib.crc32(data, previous) >>> 0,
};

const adler32: Checksum = {
  type: 'adler32',
  initial: 1,
  update: (data, previous = 1) => native().adler32(data, previous) >>> 0,
};

export function checksumFor(type: ChecksumType): Checksum {
  return type === 'crc32' ? crc32 : adler32;
}
