/**
 * Test oracle: every partition key of a plain SSTable, decoded from its index. BIG formats list
 * every key in Index.db; BTI formats hold a trie in Partitions.db whose leaves point at the
 * partition's start in Data.db (or at its row index in Rows.db), where the key is serialized
 * with a short length. The trie layout is the one BtiFormat.md documents in Cassandra's source.
 */
import * as fs from 'node:fs';

import { componentPath, SSTableFiles } from '../src/sstable/descriptor';

/** Cassandra's unsigned vint: the count of leading 1 bits in the first byte is the extra bytes. */
function readUnsignedVInt(buf: Buffer, at: number): [value: number, next: number] {
  const first = buf[at];
  let extra = 0;
  while (extra < 8 && (first & (0x80 >> extra)) !== 0) extra++;
  let value = BigInt(first & (0xff >> extra));
  for (let i = 1; i <= extra; i++) value = (value << 8n) | BigInt(buf[at + i]);
  return [Number(value), at + 1 + extra];
}

/** Keys of a BIG-format Index.db, in file order. */
export function bigIndexKeys(index: Buffer, format: string): Buffer[] {
  const keys: Buffer[] = [];
  const legacy = format < 'ma';
  let at = 0;
  while (at < index.length) {
    const len = index.readUInt16BE(at);
    keys.push(index.subarray(at + 2, at + 2 + len));
    at += 2 + len;
    if (legacy) {
      at += 8;
      const promoted = index.readInt32BE(at);
      at += 4 + promoted;
    } else {
      [, at] = readUnsignedVInt(index, at);
      let promoted: number;
      [promoted, at] = readUnsignedVInt(index, at);
      at += promoted;
    }
  }
  return keys;
}

/** Pointer widths in bits of the sparse (5-9) and dense (10-15) trie node types. */
const SPARSE_BITS = [8, 12, 16, 24, 40];
const DENSE_BITS = [12, 16, 24, 32, 40, 64];

/** The `bits`-wide big-endian unsigned number starting `bitOffset` bits after `base`. */
function readBits(buf: Buffer, base: number, bitOffset: number, bits: number): number {
  let v = 0n;
  for (let b = 0; b < bits; b++) {
    const bit = bitOffset + b;
    v = (v << 1n) | BigInt((buf[base + (bit >> 3)] >> (7 - (bit & 7))) & 1);
  }
  return Number(v);
}

function signedAt(buf: Buffer, at: number, bytes: number): number {
  return Number(
    BigInt.asIntN(bytes * 8, BigInt(`0x${buf.subarray(at, at + bytes).toString('hex') || '0'}`)),
  );
}

/** Every payload position (idxpos) reachable from the trie node at `node`. */
function triePayloads(f: Buffer, node: number, out: number[]): void {
  const type = f[node] >> 4;
  const pb = f[node] & 0x0f;
  const children: number[] = [];
  let ppos: number;
  if (type === 0) {
    ppos = node + 1;
  } else if (type === 1) {
    children.push(pb);
    ppos = -1;
  } else if (type === 3) {
    children.push((pb << 8) | f[node + 1]);
    ppos = -1;
  } else if (type === 2 || type === 4) {
    const width = type === 2 ? 1 : 2;
    children.push(f.readUIntBE(node + 2, width));
    ppos = node + 2 + width;
  } else if (type <= 9) {
    const bits = SPARSE_BITS[type - 5];
    const count = f[node + 1];
    const base = node + 2 + count;
    for (let i = 0; i < count; i++) children.push(readBits(f, base, i * bits, bits));
    ppos = base + Math.ceil((count * bits) / 8);
  } else {
    const bits = DENSE_BITS[type - 10];
    const length = f[node + 2] + 1;
    for (let i = 0; i < length; i++) children.push(readBits(f, node + 3, i * bits, bits));
    ppos = node + 3 + Math.ceil((length * bits) / 8);
  }
  const hasPayload = type !== 1 && type !== 3 && pb !== 0;
  if (hasPayload) out.push(pb >= 8 ? signedAt(f, ppos + 1, pb - 7) : signedAt(f, ppos, pb));

  // Pointers are distances back from this node; a dense node's holes are zero.
  for (const distance of children) if (distance !== 0) triePayloads(f, node - distance, out);
}

function keyAt(buf: Buffer, at: number, file: string): Buffer {
  if (at < 0 || at + 2 > buf.length)
    throw new Error(`${file}: partition key position ${at} out of range`);
  return buf.subarray(at + 2, at + 2 + buf.readUInt16BE(at));
}

/**
 * Keys of a BTI SSTable, in trie order. `data` is its uncompressed Data.db. Checks the count
 * against the key count in the Partitions.db footer.
 */
export function btiKeys(files: SSTableFiles, data: Buffer): Buffer[] {
  const partitionsFile = componentPath(files, 'Partitions.db');
  const partitions = fs.readFileSync(partitionsFile);
  const rows = fs.readFileSync(componentPath(files, 'Rows.db'));
  const keyCount = Number(partitions.readBigInt64BE(partitions.length - 16));
  const root = Number(partitions.readBigInt64BE(partitions.length - 8));

  const positions: number[] = [];
  triePayloads(partitions, root, positions);
  const keys = positions.map((p) =>
    p >= 0 ? keyAt(rows, p, 'Rows.db') : keyAt(data, ~p, 'Data.db'),
  );
  if (keys.length !== keyCount) {
    throw new Error(
      `${partitionsFile}: the trie has ${keys.length} keys, its footer says ${keyCount}`,
    );
  }
  return keys;
}

/** Every partition key of a plain SSTable. */
export function partitionKeys(files: SSTableFiles, data: Buffer): Buffer[] {
  if (files.components.includes('Partitions.db')) return btiKeys(files, data);
  return bigIndexKeys(fs.readFileSync(componentPath(files, 'Index.db')), files.version);
}
