/**
 * The two checksums Cassandra puts on SSTable chunks and digests: CRC32 (ma and later, and BTI)
 * and Adler-32 (la and lb). Both continue from a previous value so whole files can be checksummed
 * piece by piece.
 */
import * as zlib from 'node:zlib';

import { native } from './native';
import { asSpans } from './util/slabs';

export type ChecksumType = 'crc32' | 'adler32';

export interface Checksum {
  readonly type: ChecksumType;
  /** Value of an empty input, to start a running checksum. */
  readonly initial: number;
  /** Extends `previous` (default: start afresh) over `data`. Unsigned 32-bit result. */
  update(data: Uint8Array, previous?: number): number;
  /** The checksum of A followed by B, from the checksum of each and B's length. */
  combine(a: number, b: number, lengthOfB: number): number;
  /**
   * Each buffer's checksum, and that of them all end to end continuing from `previous` (with
   * `framed`, each followed by its checksum as 4 big-endian bytes, Data.db's chunk framing),
   * computed on the addon's thread pool: the event loop only waits. The buffers must stay
   * unchanged until it settles.
   */
  batch(
    buffers: Uint8Array[],
    previous?: number,
    framed?: boolean,
  ): Promise<{ sums: Uint32Array; combined: number }>;
  /**
   * What {@link batch} gives as `combined`, from each buffer's checksum and length alone: for
   * buffers already checksummed on the way (a compressor's `sums`), so that the data is not read
   * again.
   */
  fold(
    sums: ArrayLike<number>,
    lengths: ArrayLike<number>,
    previous?: number,
    framed?: boolean,
  ): number;
}

function foldOf(
  checksum: Checksum,
  sums: ArrayLike<number>,
  lengths: ArrayLike<number>,
  previous: number,
  framed: boolean,
): number {
  const be = Buffer.allocUnsafe(4);
  let combined = previous;
  for (let i = 0; i < sums.length; i++) {
    combined = checksum.combine(combined, sums[i], lengths[i]);
    if (!framed) continue;
    be.writeUInt32BE(sums[i] >>> 0, 0);
    combined = checksum.update(be, combined);
  }
  return combined >>> 0;
}

async function batchOf(
  type: ChecksumType,
  buffers: Uint8Array[],
  previous: number,
  framed = false,
) {
  const out = await native().checksumBatch(type, asSpans(buffers), previous, framed);
  return { sums: out.subarray(0, buffers.length), combined: out[buffers.length] };
}

const crc32: Checksum = {
  type: 'crc32',
  initial: 0,
  update: (data, previous = 0) => zlib.crc32(data, previous) >>> 0,
  combine: (a, b, n) => native().checksumCombine('crc32', a, b, n),
  batch: (buffers, previous = 0, framed = false) => batchOf('crc32', buffers, previous, framed),
  fold: (sums, lengths, previous = 0, framed = false) =>
    foldOf(crc32, sums, lengths, previous, framed),
};

const adler32: Checksum = {
  type: 'adler32',
  initial: 1,
  update: (data, previous = 1) => native().adler32(data, previous) >>> 0,
  combine: (a, b, n) => native().checksumCombine('adler32', a, b, n),
  batch: (buffers, previous = 1, framed = false) => batchOf('adler32', buffers, previous, framed),
  fold: (sums, lengths, previous = 1, framed = false) =>
    foldOf(adler32, sums, lengths, previous, framed),
};

export function checksumFor(type: ChecksumType): Checksum {
  return type === 'crc32' ? crc32 : adler32;
}
