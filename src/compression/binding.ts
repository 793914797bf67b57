/**
 * What an authenticated (GCM) chunk is bound to. Its additional authenticated data is
 *
 *   "sstable-tde chunk v1" 0x00 | SSTable id (16 bytes) | chunk index (u64 BE) | last (1 byte)
 *   | key check value (8 bytes)
 *
 * so a chunk fails its tag if its bytes change, if it is moved to another position, copied into
 * another SSTable (each SSTable gets a random id, kept in CompressionInfo.db as `sstable_id`),
 * read under another key, or if chunks are cut off the end (the last chunk is marked). The id is
 * random rather than the file name, so Cassandra may rename SSTables (import, refresh) freely.
 */
import { randomBytes } from 'node:crypto';

import { TdeError } from '../errors';

const MAGIC = Buffer.from('sstable-tde chunk v1\0', 'latin1');
const ID_BYTES = 16;

/** The CompressionInfo.db option that records an SSTable's id. */
export const SSTABLE_ID_OPTION = 'sstable_id';

export interface ChunkBinding {
  /** The SSTable's random identity. */
  sstableId: Buffer;
  /** Index, within its SSTable, of the batch's first chunk. */
  first: number;
  /** Index of the SSTable's last chunk, when known to be in (or before the end of) this batch. */
  last?: number;
}

export function newSSTableId(): Buffer {
  return randomBytes(ID_BYTES);
}

export function parseSSTableId(hex: string | undefined, file: string): Buffer {
  if (hex === undefined || !/^[0-9a-f]{32}$/.test(hex)) {
    throw new TdeError(
      'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      `${file} has no valid ${SSTABLE_ID_OPTION}, ` +
        'which an authenticated (GCM) SSTable needs to check its chunks; the file is damaged or ' +
        'was replaced',
      { file },
    );
  }
  return Buffer.from(hex, 'hex');
}

/**
 * Additional data for each chunk of a batch of `count` chunks: views of one allocation, so that
 * the addon takes them all in one hand-over.
 */
export function chunkAad(binding: ChunkBinding, count: number, keyCheckValue: string): Buffer[] {
  const kcv = Buffer.from(keyCheckValue, 'hex');
  const size = MAGIC.length + ID_BYTES + 8 + 1 + kcv.length;
  const all = Buffer.allocUnsafeSlow(size * count);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const index = binding.first + i;
    const aad = all.subarray(i * size, (i + 1) * size);
    let at = MAGIC.copy(aad, 0);
    at += binding.sstableId.copy(aad, at);
    at = aad.writeBigUInt64BE(BigInt(index), at);
    at = aad.writeUInt8(index === binding.last ? 1 : 0, at);
    kcv.copy(aad, at);
    out.push(aad);
  }
  return out;
}

/** The CompressionInfo.db option listing the components encrypted page by page (page-file.ts). */
export const ENCRYPTED_COMPONENTS_OPTION = 'encrypted_components';

/** The CompressionInfo.db option holding the tag over an authenticated SSTable's metadata. */
export const SSTABLE_TAG_OPTION = 'sstable_tag';

export interface SSTableMetadata {
  className: string;
  sstableId: Buffer;
  chunkLength: number;
  dataLength: number;
  chunkCount: number;
  /** Components encrypted page by page, comma-separated (or empty). */
  encryptedComponents: string;
}

/**
 * What the metadata tag covers: the class, the SSTable id, and the chunk length, data length and
 * chunk count. Chunk tags alone cannot see an SSTable emptied of all its chunks; this tag can.
 */
export function metadataAad(m: SSTableMetadata): Buffer {
  const fixed = Buffer.alloc(8 + 4 + 4);
  fixed.writeBigUInt64BE(BigInt(m.dataLength), 0);
  fixed.writeUInt32BE(m.chunkCount, 8);
  fixed.writeUInt32BE(m.chunkLength, 12);
  return Buffer.concat([
    Buffer.from(`sstable-tde sstable v1\0${m.className}\0`, 'latin1'),
    m.sstableId,
    fixed,
    Buffer.from(m.encryptedComponents, 'latin1'),
  ]);
}

/** Additional data for pages of an encrypted index or metadata component (see page-file.ts). */
export function pageAad(
  component: string,
  sstableId: Buffer,
  first: number,
  count: number,
  last: number,
  keyCheckValue: string,
): Buffer[] {
  const head = Buffer.from(`sstable-tde page v1\0${component}\0`, 'latin1');
  const kcv = Buffer.from(keyCheckValue, 'hex');
  return Array.from({ length: count }, (_, k) => {
    const tail = Buffer.alloc(9);
    tail.writeBigUInt64BE(BigInt(first + k), 0);
    tail.writeUInt8(first + k === last ? 1 : 0, 8);
    return Buffer.concat([head, sstableId, tail, kcv]);
  });
}
