/**
 * Reading and writing commit log segments in Cassandra's encrypted layout (see format.ts), and
 * plain ones (sync markers around raw entries) as a baseline.
 *
 * A reader stops at the first section it cannot use and says where and why; everything before
 * it was read and checked. A segment a crash cut short therefore gives up only its unfinished
 * last section.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';

import { ChunkCipher, createChunkCipher } from '../cipher/chunk-cipher';
import { fromSystem, isTdeError, TdeError } from '../errors';
import { lz4Napi, plausibleLength } from '../compression/codecs';
import { readFully, writeFully, writevFully } from '../util/files';
import {
  BLOCK_HEADER_SIZE,
  frameEntry,
  markerCrc,
  parseHeader,
  readEntries,
  SECTION_HEADER_SIZE,
  SegmentHeader,
  serializeHeader,
  SYNC_MARKER_SIZE,
} from './format';

/** Key bytes for a segment's key alias and cipher; throws a TdeError when there is none. */
export type SegmentKeyResolver = (alias: string, transformation: string) => Promise<Buffer>;

export interface SegmentReport {
  file: string;
  version: number;
  id: string;
  /** encCipher and encKeyAlias of an encrypted segment. */
  cipher?: string;
  keyAlias?: string;
  sections: number;
  blocks: number;
  /** Bytes of the file. */
  storedBytes: number;
  /** Bytes of entry data in the sections read. */
  dataBytes: number;
  entries: number;
  /** False when reading stopped before the end of the file. */
  complete: boolean;
  /**
   * Where and why reading stopped early; `truncated` when the file ends inside a section (a
   * crash while writing), otherwise a section is damaged. `code` is the matching error code.
   */
  stoppedAt?: {
    offset: number;
    reason: string;
    truncated: boolean;
    code: 'ERR_TDE_SEGMENT_TRUNCATED' | 'ERR_TDE_SEGMENT_DAMAGED';
  };
}

const MAX_BLOCK = 64 * 1024 * 1024;

/** Opens the cipher an encrypted segment's header names; undefined for a plain segment. */
async function segmentCipher(
  header: SegmentHeader,
  file: string,
  resolveKey: SegmentKeyResolver,
): Promise<ChunkCipher | undefined> {
  const p = header.params;
  if (p.encCipher === undefined) {
    if (p.compressionClass !== undefined) {
      throw new TdeError(
        'ERR_TDE_UNSUPPORTED',
        `${file} is compressed (${String(p.compressionClass)}) but not encrypted; ` +
          'sstable-tde reads encrypted and plain segments only',
        { file },
      );
    }
    return undefined;
  }
  const aliasOk = p.encKeyAlias === undefined || typeof p.encKeyAlias === 'string';
  if (
    typeof p.encCipher !== 'string' ||
    !aliasOk ||
    typeof p.encIV !== 'string' ||
    !/^([0-9a-fA-F]{2})+$/.test(p.encIV)
  ) {
    throw new TdeError(
      'ERR_TDE_SEGMENT_HEADER',
      `${file}: the header's encCipher, encKeyAlias ` +
        'or encIV is not text of the right form (encIV: hex)',
      { file },
    );
  }
  return headerCipher(p.encCipher, String(p.encKeyAlias ?? ''), p.encIV, file, resolveKey);
}

/**
 * The cipher a segment's header or a hints file's descriptor names, with its key. A key that does
 * not fit the cipher keeps its own code; an IV that does not is a damaged header.
 */
export async function headerCipher(
  transformation: string,
  alias: string,
  ivHex: string,
  file: string,
  resolveKey: SegmentKeyResolver,
): Promise<ChunkCipher> {
  const key = await resolveKey(alias, transformation);
  try {
    return createChunkCipher({
      cipher_algorithm: transformation,
      secret_key_strength: key.length * 8,
      key,
      fixed_iv: Buffer.from(ivHex, 'hex'),
    });
  } catch (err) {
    if (isTdeError(err, 'ERR_TDE_INVALID_ARGUMENT')) {
      throw new TdeError(
        'ERR_TDE_SEGMENT_HEADER',
        `${file}: the cipher settings it records ` +
          `cannot be used (${err.message}): the header is damaged`,
        { file },
        err,
      );
    }
    const code = isTdeError(err) ? err.code : 'ERR_TDE_SEGMENT_HEADER';
    throw new TdeError(
      code,
      `${file}: key ${alias} does not fit ${transformation}: ` + `${(err as Error).message}`,
      { file, key: alias },
      err,
    );
  } finally {
    key.fill(0);
  }
}

/** Decodes an encrypted section's blocks (already decrypted) into its data. */
async function inflateBlocks(plain: Buffer[], where: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const p of plain) {
    if (p.length < 8)
      throw new Error(`${where}: a block holds ${p.length} bytes, too few for its lengths`);
    const raw = p.readInt32BE(0);
    if (raw < 0 || raw > MAX_BLOCK || p.readUInt32LE(4) !== raw) {
      throw new Error(`${where}: a block's lengths disagree (${raw} and ${p.readUInt32LE(4)})`);
    }
    if (!plausibleLength('LZ4', p.length - 4, raw)) {
      throw new Error(
        `${where}: a block of ${p.length} bytes claims ${raw} bytes of data, more ` +
          'than LZ4 can produce',
      );
    }
    const out = await lz4Napi().uncompress(p.subarray(4));
    if (out.length !== raw)
      throw new Error(`${where}: a block decompresses to ${out.length} bytes, not ${raw}`);
    parts.push(out);
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Positions in a segment are Java ints: no segment Cassandra writes reaches 2 GiB. */
const MAX_SEGMENT_BYTES = 0x7fffffff;
/** Enough for any segment header (its parameters are at most 64 KiB of JSON). */
const HEADER_PREFIX_BYTES = 1 << 20;

/**
 * A segment's bytes and header, and what `withHeader` makes of the header. The header is read,
 * checked and handed to `withHeader` first, so that a file that is not a segment, or one whose
 * key cannot be had, is refused before the rest of it is read into memory.
 */
async function readSegmentFile<T>(
  file: string,
  withHeader: (header: SegmentHeader) => Promise<T>,
): Promise<{ buf: Buffer; header: SegmentHeader; made: T }> {
  let fd: fs.promises.FileHandle;
  try {
    fd = await fs.promises.open(file, 'r');
  } catch (err) {
    throw fromSystem(err, file, 'read commit log segment');
  }
  try {
    const { size } = await fd.stat();
    if (size > MAX_SEGMENT_BYTES) {
      throw new TdeError(
        'ERR_TDE_SEGMENT_HEADER',
        `${file} is ${size} bytes, more than any commit log segment can be (positions in one ` +
          'are Java ints, so a segment stays under 2 GiB): it is not a segment',
        { file },
      );
    }
    const head = await readFully(fd, file, 0, Math.min(size, HEADER_PREFIX_BYTES));
    const header = parseHeader(head, file);
    const made = await withHeader(header);
    const buf = size <= head.length ? head : await readFully(fd, file, 0, size);
    return { buf, header, made };
  } catch (err) {
    throw isTdeError(err) ? err : fromSystem(err, file, 'read commit log segment');
  } finally {
    await fd.close();
  }
}

/**
 * Reads a whole segment, checking every checksum; `onEntry` receives each entry (a serialized
 * mutation) in order. Errors that leave nothing to read (header, key) are thrown; a section that
 * cannot be read ends the walk and is described in `stoppedAt`.
 */
export async function readSegment(
  file: string,
  resolveKey: SegmentKeyResolver,
  onEntry?: (entry: Buffer) => void,
): Promise<SegmentReport> {
  // The key is resolved from the header before the rest is read: a wrong password or a missing
  // key fails without reading a large segment first.
  const {
    buf,
    header,
    made: cipher,
  } = await readSegmentFile(file, (h) => segmentCipher(h, file, resolveKey));
  const report: SegmentReport = {
    file,
    version: header.version,
    id: header.id.toString(),
    cipher: cipher?.transformation,
    keyAlias:
      header.params.encKeyAlias === undefined ? undefined : String(header.params.encKeyAlias),
    sections: 0,
    blocks: 0,
    storedBytes: buf.length,
    dataBytes: 0,
    entries: 0,
    complete: true,
  };
  const stop = (offset: number, reason: string, truncated = false) => {
    report.complete = false;
    report.stoppedAt = {
      offset,
      reason,
      truncated,
      code: truncated ? 'ERR_TDE_SEGMENT_TRUNCATED' : 'ERR_TDE_SEGMENT_DAMAGED',
    };
  };

  try {
    let pos = header.length;
    while (pos < buf.length) {
      if (buf.length - pos < (cipher ? SECTION_HEADER_SIZE : SYNC_MARKER_SIZE)) {
        if (buf.subarray(pos).every((b) => b === 0)) break;
        stop(pos, `the file ends ${buf.length - pos} bytes into a section header`, true);
        break;
      }
      const next = buf.readInt32BE(pos);
      if (buf.readUInt32BE(pos + 4) !== markerCrc(header.id, pos) || next === 0) {
        // No valid marker: the data ends here. Zeros throughout are an unused tail. A marker of
        // zeros before data is a section whose marker was never written (the writer writes it
        // last), so a crash cut it short; any other marker is damage.
        if (buf.subarray(pos).every((b) => b === 0)) break;
        const unwritten = buf.subarray(pos, pos + SYNC_MARKER_SIZE).every((b) => b === 0);
        stop(
          pos,
          unwritten
            ? `the section at ${pos} was never finished (its marker is empty): a crash while it ` +
                `was being written`
            : `the section marker at ${pos} fails its checksum: the segment is damaged`,
          unwritten,
        );
        break;
      }
      if (next > buf.length) {
        stop(
          pos,
          `the section at ${pos} should end at ${next}, but the file ends at ${buf.length}: ` +
            'it was cut short, most likely by a crash while it was being written',
          true,
        );
        break;
      }
      if (next < pos + SYNC_MARKER_SIZE) {
        stop(pos, `the section marker at ${pos} points backwards (to ${next})`);
        break;
      }

      let data: Buffer;
      const where = `section at ${pos}`;
      if (cipher) {
        const plainLength = buf.readInt32BE(pos + 8);
        const blocks: Buffer[] = [];
        let at = pos + SECTION_HEADER_SIZE;
        let bad: string | undefined;
        while (at < next) {
          if (next - at < BLOCK_HEADER_SIZE) {
            bad = `a block header at ${at} is cut off`;
            break;
          }
          const encLength = buf.readInt32BE(at);
          if (encLength < 0 || encLength > next - at - BLOCK_HEADER_SIZE) {
            bad = `a block at ${at} claims ${encLength} bytes, more than its section holds`;
            break;
          }
          blocks.push(buf.subarray(at + BLOCK_HEADER_SIZE, at + BLOCK_HEADER_SIZE + encLength));
          at += BLOCK_HEADER_SIZE + encLength;
        }
        if (bad) {
          stop(pos, bad);
          break;
        }
        try {
          const plain = await cipher.decryptBatch(blocks);
          data = await inflateBlocks(plain, where);
          cipher.recycle(plain);
        } catch (err) {
          stop(pos, `${where} does not decrypt and decompress: ${(err as Error).message}`);
          break;
        }
        if (data.length !== plainLength) {
          stop(
            pos,
            `${where} holds ${data.length} bytes of data, but its header says ${plainLength}`,
          );
          break;
        }
        report.blocks += blocks.length;
      } else {
        data = buf.subarray(pos + SYNC_MARKER_SIZE, next);
      }

      const walk = readEntries(data);
      if (walk.fault) {
        stop(pos, `${where}: ${walk.fault.reason} (at byte ${walk.fault.offset} of its data)`);
        break;
      }
      for (const e of walk.entries) onEntry?.(e);
      report.entries += walk.entries.length;
      report.dataBytes += data.length;
      report.sections++;
      pos = next;
    }
  } finally {
    cipher?.destroy();
  }
  return report;
}

export interface SegmentEncryption {
  /** JCE transformation, e.g. AES/CBC/PKCS5Padding (the one Cassandra uses). */
  transformation: string;
  key: Uint8Array;
  /** Name a reader resolves the key by: a key file name, kmip://GROUP/ID, or a key store alias. */
  keyAlias: string;
}

export interface SegmentWriterOptions {
  file: string;
  id: bigint;
  /** Commit log version written into the header (default 7, Cassandra 4.x). */
  version?: number;
  /** Omit for a plain segment. */
  encryption?: SegmentEncryption;
  /** Largest plain block before compression and encryption (chunk_length_kb); default 64 KiB. */
  blockLength?: number;
}

/**
 * Appends entries (serialized mutations) to a new segment and writes them in sync sections. An
 * entry is durable once the sync() after it resolves.
 */
export class SegmentWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private position: number;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly fd: fs.promises.FileHandle,
    readonly file: string,
    private readonly id: bigint,
    private readonly cipher: ChunkCipher | undefined,
    private readonly blockLength: number,
    headerLength: number,
  ) {
    this.position = headerLength;
  }

  static async create(options: SegmentWriterOptions): Promise<SegmentWriter> {
    const blockLength = options.blockLength ?? 65536;
    if (!Number.isInteger(blockLength) || blockLength < 1024 || blockLength > MAX_BLOCK) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `blockLength must be 1 KiB to 64 MiB, not ${blockLength}`,
      );
    }
    let cipher: ChunkCipher | undefined;
    let params: Record<string, unknown> = {};
    if (options.encryption) {
      const e = options.encryption;
      const probe = createChunkCipher({
        cipher_algorithm: e.transformation,
        secret_key_strength: e.key.length * 8,
        key: e.key,
      });
      const iv = randomBytes(probe.choice.ivLength || probe.choice.blockSize);
      probe.destroy();
      cipher = createChunkCipher({
        cipher_algorithm: e.transformation,
        secret_key_strength: e.key.length * 8,
        key: e.key,
        fixed_iv: iv,
      });
      params = {
        encCipher: cipher.transformation,
        encIV: iv.toString('hex'),
        encKeyAlias: e.keyAlias,
      };
    }
    const header = serializeHeader(options.version ?? 7, options.id, params);
    let fd: fs.promises.FileHandle;
    try {
      fd = await fs.promises.open(options.file, 'wx', 0o600);
      await writeFully(fd, header, 0);
    } catch (err) {
      cipher?.destroy();
      throw fromSystem(err, options.file, 'create commit log segment');
    }
    return new SegmentWriter(fd, options.file, options.id, cipher, blockLength, header.length);
  }

  /** Adds one entry to the section being built. */
  append(entry: Uint8Array): void {
    if (this.closed) throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${this.file} is closed`);
    const framed = frameEntry(entry);
    this.pending.push(framed);
    this.pendingBytes += framed.length;
  }

  /** Writes what was appended as one section and syncs it to disk. */
  sync(): Promise<void> {
    const run = this.queue.then(() => this.writeSection());
    this.queue = run.catch(() => {});
    return run;
  }

  private async writeSection(): Promise<void> {
    if (this.pending.length === 0) return;
    const data = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    const start = this.position;

    let body: Buffer[];
    if (this.cipher) {
      const plain: Buffer[] = [];
      for (let at = 0; at < data.length; at += this.blockLength) {
        const slice = data.subarray(at, at + this.blockLength);
        const compressed = await lz4Napi().compress(slice);
        const withLength = Buffer.alloc(4 + compressed.length);
        withLength.writeInt32BE(slice.length, 0);
        compressed.copy(withLength, 4);
        plain.push(withLength);
      }
      const encrypted = await this.cipher.encryptBatch(plain);
      body = [];
      for (let i = 0; i < encrypted.length; i++) {
        const head = Buffer.alloc(BLOCK_HEADER_SIZE);
        head.writeInt32BE(encrypted[i].length, 0);
        head.writeInt32BE(plain[i].length, 4);
        body.push(head, encrypted[i]);
      }
    } else {
      body = [data];
    }
    const headerSize = this.cipher ? SECTION_HEADER_SIZE : SYNC_MARKER_SIZE;
    const end = start + headerSize + body.reduce((n, b) => n + b.length, 0);
    const marker = Buffer.alloc(headerSize);
    marker.writeInt32BE(end, 0);
    marker.writeUInt32BE(markerCrc(this.id, start), 4);
    if (this.cipher) marker.writeInt32BE(data.length, 8);

    try {
      // The body first, then its marker: a crash in between leaves no valid marker, so the
      // half-written section is never taken for a complete one.
      await writevFully(this.fd, body, start + headerSize);
      await this.fd.datasync();
      await writeFully(this.fd, marker, start);
      await this.fd.datasync();
    } catch (err) {
      throw fromSystem(err, this.file, 'write commit log section to');
    }
    this.position = end;
  }

  /** Syncs what is pending and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    this.cipher?.destroy();
    await this.fd.close();
  }

  /** Bytes appended but not yet synced. */
  get unsynced(): number {
    return this.pendingBytes;
  }
}
