/**
 * CompressionInfo.db (sstable-format.md §2): compressor class name, options, chunk length,
 * (na and later) max compressed length, uncompressed data length, chunk count and the Data.db
 * offset of every chunk. Big-endian, strings as Java's modified UTF-8 (u16 length, then bytes).
 *
 * The parser trusts no length it reads: every count and size is checked against the bytes that
 * are actually there before anything is allocated from it.
 */
import { TdeError } from '../errors';

export interface CompressionInfo {
  className: string;
  options: Record<string, string>;
  /** Uncompressed bytes in every chunk but possibly the last. */
  chunkLength: number;
  /** Present for na and later; 2147483647 means every chunk is compressed. */
  maxCompressedLength?: number;
  /** Total bytes of the uncompressed data. */
  dataLength: number;
  /** Where each chunk starts in Data.db; each chunk is followed by its 4-byte checksum. */
  chunkOffsets: number[];
}

export const NEVER_UNCOMPRESSED = 0x7fffffff;
const MAX_OPTIONS = 1024;
const MAX_CHUNK_LENGTH = 1 << 30;

class Cursor {
  at = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly file: string,
  ) {}

  fail(what: string): never {
    throw new TdeError(
      'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      `${this.file} is damaged: ${what} (at byte ${this.at} of ${this.buf.length}); restore the ` +
        'SSTable from a backup or snapshot',
      { file: this.file, offset: this.at },
    );
  }

  need(n: number, what: string): void {
    if (this.buf.length - this.at < n) this.fail(`the file ends inside ${what}`);
  }

  int(what: string): number {
    this.need(4, what);
    const v = this.buf.readInt32BE(this.at);
    this.at += 4;
    return v;
  }

  long(what: string): number {
    this.need(8, what);
    const v = this.buf.readBigInt64BE(this.at);
    this.at += 8;
    if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is out of range`);
    return Number(v);
  }

  utf(what: string): string {
    this.need(2, what);
    const len = this.buf.readUInt16BE(this.at);
    this.at += 2;
    this.need(len, what);
    const s = this.buf.toString('utf8', this.at, this.at + len);
    this.at += len;
    return s;
  }

  get remaining(): number {
    return this.buf.length - this.at;
  }
}

export function parseCompressionInfo(
  buf: Buffer,
  file: string,
  hasMaxCompressedLength: boolean,
): CompressionInfo {
  const c = new Cursor(buf, file);
  const className = c.utf('the compressor class name');
  if (className === '') c.fail('the compressor class name is empty');

  const optionCount = c.int('the option count');
  if (optionCount < 0 || optionCount > MAX_OPTIONS)
    c.fail(`option count ${optionCount} is not plausible`);
  const options: Record<string, string> = {};
  for (let i = 0; i < optionCount; i++) {
    const key = c.utf(`option ${i}'s name`);
    options[key] = c.utf(`option ${key}'s value`);
  }

  const chunkLength = c.int('the chunk length');
  if (
    chunkLength <= 0 ||
    chunkLength > MAX_CHUNK_LENGTH ||
    (chunkLength & (chunkLength - 1)) !== 0
  ) {
    c.fail(`chunk length ${chunkLength} is not a power of two up to 1 GiB`);
  }
  let maxCompressedLength: number | undefined;
  if (hasMaxCompressedLength) {
    maxCompressedLength = c.int('the max compressed length');
    if (maxCompressedLength <= 0)
      c.fail(`max compressed length ${maxCompressedLength} is not positive`);
  }
  const dataLength = c.long('the data length');
  const chunkCount = c.int('the chunk count');
  const expectedCount = Math.ceil(dataLength / chunkLength);
  if (chunkCount !== expectedCount) {
    c.fail(
      `it lists ${chunkCount} chunks, but ${dataLength} bytes in ${chunkLength}-byte chunks ` +
        `need ${expectedCount}`,
    );
  }
  if (c.remaining !== chunkCount * 8) {
    c.fail(
      c.remaining < chunkCount * 8
        ? `it is truncated: ${chunkCount} chunk offsets need ${chunkCount * 8} bytes, ` +
            `${c.remaining} remain`
        : `${c.remaining - chunkCount * 8} unexpected bytes follow the chunk offsets`,
    );
  }

  const chunkOffsets = new Array<number>(chunkCount);
  for (let i = 0; i < chunkCount; i++) {
    chunkOffsets[i] = c.long(`chunk offset ${i}`);
    // Each chunk is at least its 4-byte checksum long.
    if (i > 0 && chunkOffsets[i] < chunkOffsets[i - 1] + 4) {
      c.fail(
        `chunk offset ${i} (${chunkOffsets[i]}) does not follow chunk ` +
          `${i - 1} (${chunkOffsets[i - 1]})`,
      );
    }
  }
  return { className, options, chunkLength, maxCompressedLength, dataLength, chunkOffsets };
}

function utf(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > 0xffff)
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `string too long for CompressionInfo.db`);
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(bytes.length, 0);
  bytes.copy(out, 2);
  return out;
}

export function serializeCompressionInfo(
  info: CompressionInfo,
  hasMaxCompressedLength: boolean,
): Buffer {
  const parts: Buffer[] = [utf(info.className)];
  const entries = Object.entries(info.options);
  const count = Buffer.allocUnsafe(4);
  count.writeInt32BE(entries.length, 0);
  parts.push(count);
  for (const [k, v] of entries) parts.push(utf(k), utf(v));

  const fixed = Buffer.allocUnsafe(4 + (hasMaxCompressedLength ? 4 : 0) + 8 + 4);
  let at = fixed.writeInt32BE(info.chunkLength, 0);
  if (hasMaxCompressedLength)
    at = fixed.writeInt32BE(info.maxCompressedLength ?? NEVER_UNCOMPRESSED, at);
  at = fixed.writeBigInt64BE(BigInt(info.dataLength), at);
  fixed.writeInt32BE(info.chunkOffsets.length, at);
  parts.push(fixed);

  const offsets = Buffer.allocUnsafe(info.chunkOffsets.length * 8);
  info.chunkOffsets.forEach((o, i) => offsets.writeBigInt64BE(BigInt(o), i * 8));
  parts.push(offsets);
  return Buffer.concat(parts);
}
