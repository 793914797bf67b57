/**
 * CRC.db, the checksums of an uncompressed table (sstable-format.md §5): a 4-byte chunk size, then
 * one 4-byte checksum per consecutive slice of Data.db of that size (the last may be short).
 */
import { TdeError } from '../errors';

export interface CrcInfo {
  chunkLength: number;
  checksums: Uint32Array;
}

export function parseCrcDb(buf: Buffer, file: string, dataLength: number): CrcInfo {
  const fail = (what: string): never => {
    throw new TdeError(
      'ERR_TDE_CORRUPT_CRC',
      `${file} is damaged: ${what}; restore the SSTable ` + 'from a backup or snapshot',
      { file },
    );
  };
  if (buf.length < 4) fail('it is shorter than its 4-byte header');
  const chunkLength = buf.readInt32BE(0);
  if (chunkLength <= 0 || chunkLength > 1 << 30) fail(`chunk size ${chunkLength} is not plausible`);
  const count = Math.ceil(dataLength / chunkLength);
  const partial = (buf.length - 4) % 4;
  if (partial !== 0) {
    fail(
      `its last checksum has ${partial} of its 4 bytes (the file is ${buf.length} bytes): it ` +
        `was cut short or has bytes added; ${dataLength} bytes of Data.db in ${chunkLength}-byte ` +
        `slices need ${count} checksums`,
    );
  }
  if (buf.length !== 4 + count * 4) {
    fail(
      `it holds ${(buf.length - 4) / 4} checksums, but ${dataLength} bytes of Data.db in ` +
        `${chunkLength}-byte slices need ${count}`,
    );
  }
  const checksums = new Uint32Array(count);
  for (let i = 0; i < count; i++) checksums[i] = buf.readUInt32BE(4 + i * 4);
  return { chunkLength, checksums };
}

export function serializeCrcDb(info: CrcInfo): Buffer {
  const out = Buffer.allocUnsafe(4 + info.checksums.length * 4);
  out.writeInt32BE(info.chunkLength, 0);
  info.checksums.forEach((c, i) => out.writeUInt32BE(c, 4 + i * 4));
  return out;
}
