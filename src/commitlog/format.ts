/**
 * Apache Cassandra's encrypted commit log segment (EncryptedSegment, CommitLogDescriptor,
 * EncryptionUtils), byte by byte. All integers big-endian.
 *
 *   header   int version | long id | short n | n bytes of JSON parameters | int CRC32
 *            The JSON names encCipher, encKeyAlias and encIV (hex); the CRC covers the version,
 *            the id's low and high halves and n (each as a 4-byte int), then the JSON bytes.
 *   section  int next | int CRC32 | int plain length | blocks up to `next`
 *            `next` is the file position of the next section; the CRC covers the id's halves
 *            and this marker's own position. The plain length is that of the section's data.
 *   block    int encrypted length | int plain length | ciphertext
 *            Every block is one CBC encryption under the segment's single IV. It decrypts to
 *            int raw length | LZ4 output (4-byte little-endian length, then an LZ4 block).
 *   data     entries of int size | int CRC32(size) | size bytes | int CRC32(size, bytes),
 *            ended by the section's end or a zero size.
 *
 * The end of a segment's data is a marker whose CRC does not match, or whose next is 0.
 */
import * as zlib from 'node:zlib';

import { TdeError } from '../errors';

export const SYNC_MARKER_SIZE = 8;
export const SECTION_HEADER_SIZE = SYNC_MARKER_SIZE + 4;
export const BLOCK_HEADER_SIZE = 8;
/** The versions whose encrypted layout is the one above: Cassandra 3.0 (6) and 4.x (7). */
export const SUPPORTED_VERSIONS = [6, 7];
const MAX_PARAMS = 0xffff;

export interface SegmentHeader {
  version: number;
  id: bigint;
  params: Record<string, unknown>;
  /** Bytes the header takes; the first section starts here. */
  length: number;
}

/** The 4-byte big-endian form of an int, as Cassandra feeds ints to its checksums. */
function int4(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v | 0);
  return b;
}

function idHalves(id: bigint): [number, number] {
  return [Number(BigInt.asIntN(32, id & 0xffffffffn)), Number(BigInt.asIntN(32, id >> 32n))];
}

export function headerCrc(version: number, id: bigint, params: Buffer): number {
  const [lo, hi] = idHalves(id);
  let crc = zlib.crc32(int4(version));
  crc = zlib.crc32(int4(lo), crc);
  crc = zlib.crc32(int4(hi), crc);
  crc = zlib.crc32(int4(params.length), crc);
  return zlib.crc32(params, crc) >>> 0;
}

export function markerCrc(id: bigint, position: number): number {
  const [lo, hi] = idHalves(id);
  let crc = zlib.crc32(int4(lo));
  crc = zlib.crc32(int4(hi), crc);
  return zlib.crc32(int4(position), crc) >>> 0;
}

export function serializeHeader(
  version: number,
  id: bigint,
  params: Record<string, unknown>,
): Buffer {
  const json = Buffer.from(JSON.stringify(params), 'utf8');
  if (json.length > MAX_PARAMS)
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'commit log parameters too long');
  const out = Buffer.alloc(4 + 8 + 2 + json.length + 4);
  out.writeInt32BE(version, 0);
  out.writeBigInt64BE(id, 4);
  out.writeUInt16BE(json.length, 12);
  json.copy(out, 14);
  out.writeUInt32BE(headerCrc(version, id, json), 14 + json.length);
  return out;
}

export function parseHeader(buf: Buffer, file: string): SegmentHeader {
  const fail = (what: string): never => {
    throw new TdeError(
      'ERR_TDE_SEGMENT_HEADER',
      `${file}: ${what}; this is not a readable commit log segment`,
      { file },
    );
  };
  if (buf.length < 18) fail(`only ${buf.length} bytes, shorter than any segment header`);
  const version = buf.readInt32BE(0);
  if (!SUPPORTED_VERSIONS.includes(version)) {
    fail(
      `commit log version ${version} is not one sstable-tde reads ` +
        `(${SUPPORTED_VERSIONS.join(', ')}: Cassandra 3.0 to 4.x)`,
    );
  }
  const id = buf.readBigInt64BE(4);
  const n = buf.readUInt16BE(12);
  if (buf.length < 14 + n + 4)
    fail(`the header's ${n} bytes of parameters run past the end of the file`);
  const json = buf.subarray(14, 14 + n);
  const stored = buf.readUInt32BE(14 + n);
  if (stored !== headerCrc(version, id, json))
    fail('the header checksum does not match: the header is damaged');
  let params: unknown;
  try {
    params = n === 0 ? {} : JSON.parse(json.toString('utf8'));
  } catch {
    return fail('the header parameters are not JSON');
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params))
    fail('the header parameters are not a JSON object');
  return { version, id, params: params as Record<string, unknown>, length: 18 + n };
}

/** Frames mutations the way a section's data holds them. */
export function frameEntry(data: Uint8Array): Buffer {
  const out = Buffer.alloc(4 + 4 + data.length + 4);
  out.writeInt32BE(data.length, 0);
  const sizeCrc = zlib.crc32(out.subarray(0, 4));
  out.writeUInt32BE(sizeCrc >>> 0, 4);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8);
  out.writeUInt32BE(zlib.crc32(data, sizeCrc) >>> 0, 8 + data.length);
  return out;
}

export interface EntryWalk {
  entries: Buffer[];
  /** Where a bad entry was found, if one was. */
  fault?: { offset: number; reason: string };
}

/** Splits a section's data into its entries, checking both CRCs of each. */
export function readEntries(data: Buffer): EntryWalk {
  const entries: Buffer[] = [];
  let at = 0;
  while (at + 4 <= data.length) {
    const size = data.readInt32BE(at);
    if (size === 0) break; // end of entries
    if (at + 8 > data.length)
      return { entries, fault: { offset: at, reason: 'an entry header is cut off' } };
    const sizeCrc = zlib.crc32(data.subarray(at, at + 4)) >>> 0;
    if (data.readUInt32BE(at + 4) !== sizeCrc)
      return { entries, fault: { offset: at, reason: 'an entry size fails its checksum' } };
    if (size < 0 || at + 8 + size + 4 > data.length) {
      return {
        entries,
        fault: { offset: at, reason: `an entry of ${size} bytes runs past its section` },
      };
    }
    const body = data.subarray(at + 8, at + 8 + size);
    if (data.readUInt32BE(at + 8 + size) !== zlib.crc32(body, sizeCrc) >>> 0) {
      return { entries, fault: { offset: at, reason: 'an entry fails its checksum' } };
    }
    entries.push(body);
    at += 8 + size + 4;
  }
  return { entries };
}
