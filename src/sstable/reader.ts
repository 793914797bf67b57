/**
 * Reads an SSTable's data: compressed (Data.db + CompressionInfo.db, chunks with checksums) or
 * uncompressed (Data.db + CRC.db), encrypted or not. Callers see the uncompressed bytes, by
 * position or as a stream of chunks; every chunk's checksum is checked before it is decoded.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

import { Checksum, checksumFor } from '../checksum';
import {
  ENCRYPTED_COMPONENTS_OPTION,
  parseSSTableId,
  SSTABLE_ID_OPTION,
  SSTABLE_TAG_OPTION,
} from '../compression/binding';
import { EncryptedComponent, PlainComponent, SENSITIVE_COMPONENTS } from './page-file';
import { Compressor, createCompressor, DecodedChunks } from '../compression/compressor';
import { CompressionParams, paramsFromCompressionInfo } from '../compression/options';
import { ChunkLocator, ErrorCodeName, fromSystem, isTdeError, TdeError } from '../errors';
import { readAfterClose, readChecked, readFully } from '../util/files';
import { InFlight } from '../util/settle';
import { SlabPool } from '../util/slabs';
import { KeyProvider } from '../keys/provider';
import { CompressionInfo, parseCompressionInfo } from './compression-info';
import { CrcInfo, parseCrcDb } from './crc-db';
import {
  checkId,
  componentPath,
  displayName,
  featuresOf,
  SSTableFormat,
  SSTableId,
  VersionFeatures,
} from './descriptor';

export interface OpenOptions {
  /** Needed when the SSTable is encrypted. */
  keys?: KeyProvider;
}

/** One problem found by {@link SSTableReader.verify}. */
export interface Fault {
  code: ErrorCodeName;
  message: string;
  file: string;
  chunk?: number;
  offset?: number;
  length?: number;
}

export interface VerifyReport {
  sstable: string;
  chunks: number;
  storedBytes: number;
  dataBytes: number;
  /** CRC32 of the whole uncompressed data, to compare two SSTables' contents. */
  dataChecksum: number;
  faults: Fault[];
}

interface ChunkGeometry {
  offset: number;
  /** Stored bytes, without the trailing checksum. */
  stored: number;
  /** Bytes once decoded. */
  plain: number;
}

/** Chunks read per batch: enough to keep every core busy, small enough to bound memory. */
const BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Batches verify() reads and checks ahead of the one it decodes: with one, the threads decoding
 * a batch often waited for the next to be read and checked (a rewrite's read-back check took a
 * quarter longer on two cores; decoding ahead too gained nothing more).
 */
const VERIFY_AHEAD = 2;
/** Regions at least this large have their checksums computed on the addon's thread pool. */
const POOL_CHECKSUM_BYTES = 256 * 1024;
const CRC32 = checksumFor('crc32');

export class SSTableReader {
  readonly dataFile: string;
  /** Data.db's size on disk. */
  readonly storedLength: number;
  /** Uncompressed data length. */
  readonly dataLength: number;
  readonly chunkLength: number;
  readonly chunkCount: number;
  private readonly checksum: Checksum;
  /** Memory for the regions of compressed chunks read, reused once they are decoded. */
  private readonly regions = new SlabPool();
  /** Reads and decoding under way, which close() waits for; no new reads once closing. */
  private readonly pending = new InFlight();
  private closing = false;
  /** For authenticated chunks: the SSTable id their additional data binds them to. */
  private readonly sstableId: Buffer | undefined;

  private constructor(
    readonly id: SSTableId,
    readonly features: VersionFeatures,
    readonly params: CompressionParams,
    private readonly fd: fs.promises.FileHandle,
    storedLength: number,
    readonly compressionInfo: CompressionInfo | undefined,
    readonly crc: CrcInfo | undefined,
    readonly compressor: Compressor | undefined,
  ) {
    this.dataFile = componentPath(id, 'Data.db');
    this.storedLength = storedLength;
    this.checksum = checksumFor(features.checksum);
    if (compressionInfo) {
      this.dataLength = compressionInfo.dataLength;
      this.chunkLength = compressionInfo.chunkLength;
      this.chunkCount = compressionInfo.chunkOffsets.length;
    } else {
      this.dataLength = storedLength;
      this.chunkLength = (crc as CrcInfo).chunkLength;
      this.chunkCount = (crc as CrcInfo).checksums.length;
    }
    this.sstableId = compressor?.authenticated
      ? parseSSTableId(
          compressionInfo?.options[SSTABLE_ID_OPTION],
          componentPath(id, 'CompressionInfo.db'),
        )
      : undefined;
    if (this.sstableId && compressor?.checkMetadata && compressionInfo) {
      const tag = compressionInfo.options[SSTABLE_TAG_OPTION] ?? '';
      const ok = compressor.checkMetadata(
        {
          className: compressor.className,
          sstableId: this.sstableId,
          chunkLength: this.chunkLength,
          dataLength: this.dataLength,
          chunkCount: this.chunkCount,
          encryptedComponents: this.encryptedComponents.join(','),
        },
        tag,
      );
      if (!ok) {
        const file = componentPath(id, 'CompressionInfo.db');
        throw new TdeError(
          'ERR_TDE_INTEGRITY',
          `${file} fails its authentication tag (${SSTABLE_TAG_OPTION}): ` +
            'its chunk count, data length, chunk length or class were altered since it was ' +
            'written, or the tag was removed; restore the SSTable from a backup',
          { file },
        );
      }
    }
  }

  /**
   * Opens an SSTable, checking its compression metadata against Data.db and, when encrypted,
   * fetching its key and checking that it is the key it was written with.
   */
  static async open(id: SSTableId, options: OpenOptions = {}): Promise<SSTableReader> {
    checkId(id);
    const features = featuresOf(id);
    const dataFile = componentPath(id, 'Data.db');
    let fd: fs.promises.FileHandle;
    try {
      fd = await fs.promises.open(dataFile, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new TdeError(
          'ERR_TDE_MISSING_COMPONENT',
          `${dataFile} is missing: the SSTable ` + `${displayName(id)} is incomplete`,
          { file: dataFile },
        );
      }
      throw fromSystem(err, dataFile, 'open');
    }

    try {
      const storedLength = (await fd.stat()).size;
      const ciFile = componentPath(id, 'CompressionInfo.db');
      const crcFile = componentPath(id, 'CRC.db');
      let raw: Buffer | undefined;
      try {
        raw = await fs.promises.readFile(ciFile);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystem(err, ciFile, 'read');
      }

      if (raw) {
        const info = parseCompressionInfo(raw, ciFile, features.hasMaxCompressedLength);
        checkOffsets(info, storedLength, ciFile, dataFile);
        checkEncryptedComponents(info, id.format, ciFile);
        let params: CompressionParams;
        try {
          params = paramsFromCompressionInfo(
            info.className,
            info.options,
            info.chunkLength,
            info.maxCompressedLength,
          );
        } catch (err) {
          throw rethrowFor(err, ciFile);
        }
        const compressor = await createCompressor(params, { keys: options.keys, file: dataFile });
        try {
          return new SSTableReader(
            id,
            features,
            params,
            fd,
            storedLength,
            info,
            undefined,
            compressor,
          );
        } catch (err) {
          compressor.close();
          throw err;
        }
      }

      let crcRaw: Buffer;
      try {
        crcRaw = await fs.promises.readFile(crcFile);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new TdeError(
            'ERR_TDE_MISSING_COMPONENT',
            `SSTable ${displayName(id)} has neither ` +
              `CompressionInfo.db nor CRC.db, so its Data.db cannot be checked; restore the ` +
              `missing component from a backup`,
            { file: ciFile },
          );
        }
        throw fromSystem(err, crcFile, 'read');
      }
      const crc = parseCrcDb(crcRaw, crcFile, storedLength);
      const params: CompressionParams = {
        enabled: false,
        chunkLength: crc.chunkLength,
        codecOptions: {},
      };
      return new SSTableReader(id, features, params, fd, storedLength, undefined, crc, undefined);
    } catch (err) {
      await fd.close();
      throw err;
    }
  }

  get name(): string {
    return displayName(this.id);
  }

  /** Index and metadata components stored encrypted page by page (page-file.ts). */
  get encryptedComponents(): string[] {
    const list = this.compressionInfo?.options[ENCRYPTED_COMPONENTS_OPTION];
    return list ? list.split(',') : [];
  }

  /**
   * Opens another component of this SSTable for reading, decrypting it if it was encrypted:
   * `read(position, length)` and `readAll()` give its plain bytes either way.
   */
  async openComponent(component: string): Promise<EncryptedComponent | PlainComponent> {
    const file = componentPath(this.id, component);
    if (this.encryptedComponents.includes(component)) {
      const codec = this.compressor?.pageCodec?.(component, this.sstableId);
      if (!codec) {
        throw new TdeError(
          'ERR_TDE_CORRUPT_COMPRESSION_INFO',
          `${componentPath(this.id, 'CompressionInfo.db')} lists ` +
            `${component} as encrypted, but its class ` +
            `${this.compressor?.className ?? '(none)'} does not encrypt`,
          { file },
        );
      }
      return EncryptedComponent.open(file, codec);
    }
    return PlainComponent.open(file);
  }

  get encrypted(): boolean {
    return this.compressor?.encrypting ?? false;
  }

  geometry(i: number): ChunkGeometry {
    const plain =
      i < this.chunkCount - 1 ? this.chunkLength : this.dataLength - i * this.chunkLength;
    if (!this.compressionInfo) {
      return { offset: i * this.chunkLength, stored: plain, plain };
    }
    const offsets = this.compressionInfo.chunkOffsets;
    const end = i + 1 < offsets.length ? offsets[i + 1] : this.storedLength;
    return { offset: offsets[i], stored: end - offsets[i] - 4, plain };
  }

  private locator(first: number): ChunkLocator {
    return (i) => {
      const g = this.geometry(first + i);
      return {
        prefix: `${this.dataFile}: chunk ${first + i} at offset ${g.offset} (${g.stored} bytes)`,
        context: { file: this.dataFile, chunk: first + i, offset: g.offset, length: g.stored },
      };
    };
  }

  /** How many chunks from `first` make a batch of about BATCH_BYTES. */
  private batchEnd(first: number): number {
    const per = Math.max(1, Math.floor(BATCH_BYTES / this.chunkLength));
    return Math.min(this.chunkCount, first + per);
  }

  /**
   * Reads chunks [first, end) as stored, in one read, and checks each checksum. Returns the region
   * read (for digests), each chunk's stored bytes, and the chunks whose checksum failed.
   */
  private async readStored(
    first: number,
    end: number,
  ): Promise<{ region: Buffer; chunks: Buffer[]; bad: Fault[]; regionSum: number }> {
    if (end <= first)
      return { region: Buffer.alloc(0), chunks: [], bad: [], regionSum: this.checksum.initial };
    const start = this.geometry(first).offset;
    const last = this.geometry(end - 1);
    const stop = this.compressionInfo ? last.offset + last.stored + 4 : last.offset + last.stored;
    const length = stop - start;

    // The spans to checksum: each chunk, and with CompressionInfo the 4 bytes that follow it.
    const step = this.compressionInfo ? 2 : 1;
    const offsets = new Float64Array((end - first) * step);
    const lengths = new Uint32Array((end - first) * step);
    for (let i = first, k = 0; i < end; i++, k += step) {
      const g = this.geometry(i);
      offsets[k] = g.offset - start;
      lengths[k] = g.stored;
      if (step === 2) {
        offsets[k + 1] = g.offset - start + g.stored;
        lengths[k + 1] = 4;
      }
    }

    // A large region is read and checksummed on the thread pool in one trip, leaving the event
    // loop free; a point read's one chunk costs less here than a trip to the pool. Either way the
    // region's own checksum comes too, for the whole-file digest.
    let region: Buffer;
    let sums: ArrayLike<number>;
    let regionSum: number;
    // Refused as a read of a closed FileHandle is: close() may be waiting for reads to end.
    if (this.closing) throw readAfterClose(this.dataFile);
    if (length >= POOL_CHECKSUM_BYTES) {
      // Compressed chunks are decoded into new memory, so their region can serve again
      // (recycled by the caller once decoded); uncompressed ones are handed out as views of it.
      region = this.compressionInfo ? this.regions.carve([length])[0] : Buffer.allocUnsafe(length);
      const read = readChecked(
        this.fd,
        this.dataFile,
        start,
        length,
        region,
        { offsets, lengths },
        this.checksum.type,
      );
      ({ sums, regionSum } = await this.pending.track(read));
    } else {
      region = await readFully(this.fd, this.dataFile, start, length);
      sums = Array.from(offsets, (at, k) =>
        this.checksum.update(region.subarray(at, at + lengths[k])),
      );
      regionSum = this.checksum.update(region);
    }
    const chunks: Buffer[] = [];
    for (let k = 0; k < offsets.length; k += step) {
      chunks.push(region.subarray(offsets[k], offsets[k] + lengths[k]));
    }

    const bad: Fault[] = [];
    const where = this.locator(first);
    for (let i = first, k = 0; i < end; i++, k += step) {
      const expected =
        step === 2 ? region.readUInt32BE(offsets[k + 1]) : (this.crc as CrcInfo).checksums[i];
      const actual = sums[k];
      if (actual !== expected) {
        const w = where(i - first);
        bad.push({
          code: 'ERR_TDE_CHUNK_CHECKSUM',
          message:
            `${w.prefix}: ${this.features.checksum} is ` +
            `${actual.toString(16).padStart(8, '0')} but ` +
            `${this.compressionInfo ? 'the stored checksum' : 'CRC.db'} says ` +
            `${expected.toString(16).padStart(8, '0')}: ` +
            'the chunk is damaged; restore the SSTable from a backup or snapshot',
          ...w.context,
        } as Fault);
      }
    }
    return { region, chunks, bad, regionSum };
  }

  /**
   * Decodes stored chunks [first, first + stored.length); throws a TdeError on the first fault.
   * With `crc`, the result's `crcs` holds each plain chunk's CRC32 (from the decoding pass where
   * the addon decodes, else computed here).
   */
  private decode(first: number, stored: Buffer[], crc = false): Promise<DecodedChunks> {
    // Tracked, so that close() lets a read-ahead's decoding end before the compressor goes.
    return this.pending.track(
      (async () => {
        const out = await this.decode1(first, stored, crc);
        if (crc && !out.crcs) out.crcs = (await CRC32.batch(out)).sums;
        return out;
      })(),
    );
  }

  private async decode1(first: number, stored: Buffer[], crc: boolean): Promise<DecodedChunks> {
    if (!this.compressionInfo) return stored.slice();
    const compressor = this.compressor as Compressor;
    const lengths = stored.map((_, i) => this.geometry(first + i).plain);
    const where = this.locator(first);

    // na and later: a plain compressor's chunk at least maxCompressedLength long was stored raw.
    const max = this.compressionInfo.maxCompressedLength;
    const rawAt = (c: Buffer) => !compressor.encrypting && max !== undefined && c.length >= max;
    const binding = (at: number) =>
      this.sstableId && { sstableId: this.sstableId, first: at, last: this.chunkCount - 1 };
    if (!stored.some(rawAt))
      return compressor.uncompressBatch(stored, lengths, where, binding(first), { crc });

    const out = new Array<Buffer>(stored.length);
    const todo: number[] = [];
    stored.forEach((c, i) => {
      if (!rawAt(c)) return todo.push(i);
      if (c.length < lengths[i]) {
        const w = where(i);
        throw new TdeError(
          'ERR_TDE_CORRUPT_CHUNK',
          `${w.prefix}: an uncompressed chunk shorter than ` + `its ${lengths[i]} bytes of data`,
          w.context,
        );
      }
      out[i] = c.subarray(0, lengths[i]);
    });
    const decoded = await compressor.uncompressBatch(
      todo.map((i) => stored[i]),
      todo.map((i) => lengths[i]),
      (j) => where(todo[j]),
    );
    todo.forEach((i, j) => (out[i] = decoded[j]));
    return out;
  }

  private checkRange(first: number, count: number): void {
    if (!Number.isInteger(first) || !Number.isInteger(count)) {
      throw new TdeError(
        'ERR_TDE_READ_RANGE',
        `readChunks(first, count) takes two whole numbers, not ` +
          `${JSON.stringify(first)} and ${JSON.stringify(count)}`,
        { file: this.dataFile },
      );
    }
    if (first < 0 || count < 0 || first + count > this.chunkCount) {
      throw new TdeError(
        'ERR_TDE_READ_RANGE',
        `chunks ${first} to ${first + count - 1} are outside ` +
          `${this.dataFile}, which has ${this.chunkCount} chunks`,
        { file: this.dataFile },
      );
    }
  }

  /** Reads, checks and decodes chunks [first, first + count). */
  async readChunks(first: number, count: number): Promise<Buffer[]> {
    this.checkRange(first, count);
    return (await this.readBatch(first, first + count)).chunks;
  }

  private async readBatch(
    first: number,
    end: number,
    crc = false,
  ): Promise<{ region: Buffer; regionSum: number; chunks: DecodedChunks }> {
    const { region, regionSum, chunks, bad } = await this.readStored(first, end);
    if (bad.length > 0) {
      this.releaseRegion(region, []);
      throw faultError(bad[0]);
    }
    const decoded = await this.decode(first, chunks, crc);
    this.releaseRegion(region, decoded);
    return { region, regionSum, chunks: decoded };
  }

  /** Gives a region read for decoding back to the pool, unless a decoded chunk is a view of it. */
  private releaseRegion(region: Buffer, decoded: Buffer[]): void {
    if (decoded.every((c) => c.buffer !== region.buffer)) this.regions.recycle([region]);
  }

  /** Reads `length` bytes of uncompressed data starting at `position`. */
  async read(position: number, length: number): Promise<Buffer> {
    if (
      !Number.isInteger(position) ||
      !Number.isInteger(length) ||
      position < 0 ||
      length < 0 ||
      position + length > this.dataLength
    ) {
      throw new TdeError(
        'ERR_TDE_READ_RANGE',
        `cannot read ${length} bytes at ${position} from ` +
          `${this.dataFile}, whose data is ${this.dataLength} bytes long`,
        { file: this.dataFile },
      );
    }
    if (length === 0) return Buffer.alloc(0);
    const first = Math.floor(position / this.chunkLength);
    const last = Math.floor((position + length - 1) / this.chunkLength);
    const chunks = await this.readChunks(first, last - first + 1);
    const joined = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    const skip = position - first * this.chunkLength;
    return joined.subarray(skip, skip + length);
  }

  /**
   * The whole uncompressed data, in order, a batch of chunks at a time. The next batch is read
   * and decoded while the caller works on the current one. Once the last batch has been taken,
   * {@link streamDigest} holds the checksum of Data.db as stored, to compare with its Digest.
   */
  async *batches(): AsyncGenerator<Buffer[]> {
    for await (const { chunks } of this.batchesWithCrc(false)) yield chunks;
  }

  /**
   * As {@link batches}, with each plain chunk's CRC32 (computed while decoding where the addon
   * decodes): what a caller needs to checksum the whole data without another pass over it.
   */
  async *batchesWithCrc(crc = true): AsyncGenerator<{ chunks: Buffer[]; crcs: Uint32Array }> {
    let digest = this.checksum.initial;
    this.streamDigest = undefined;
    let next = 0;
    const start = () => {
      const end = this.batchEnd(next);
      const p = this.readBatch(next, end, crc);
      next = end;
      // Keep a failure of the read-ahead from surfacing as unhandled if the caller stops early.
      p.catch(() => {});
      return p;
    };
    let pending = this.chunkCount > 0 ? start() : undefined;
    while (pending) {
      const current = pending;
      pending = next < this.chunkCount ? start() : undefined;
      const { region, regionSum, chunks } = await current;
      digest = this.checksum.combine(digest, regionSum, region.length);
      yield { chunks, crcs: chunks.crcs ?? new Uint32Array(0) };
    }
    this.streamDigest = digest >>> 0;
  }

  /**
   * Gives back the memory of a batch from {@link batches} or {@link readChunks} once every chunk
   * of it is done with, so later batches reuse it. Optional; never for chunks still in use.
   */
  recycle(chunks: Buffer[]): void {
    this.compressor?.recycle(chunks);
  }

  /** Checksum of Data.db as stored, set when {@link batches} has run to the end. */
  streamDigest: number | undefined;

  /**
   * Reads the Digest component; undefined when there is none or it is not one this version's
   * checksum can be compared with (Digest.sha1).
   */
  async recordedDigest(component: string | undefined): Promise<string | undefined> {
    if (!component) return undefined;
    const kind = component.endsWith('adler32')
      ? 'adler32'
      : component.endsWith('crc32')
        ? 'crc32'
        : undefined;
    if (kind !== this.features.checksum) return undefined;
    const file = componentPath(this.id, component);
    try {
      return (await fs.promises.readFile(file, 'utf8')).trim();
    } catch (err) {
      throw fromSystem(err, file, 'read');
    }
  }

  /**
   * Reads every chunk and reports every fault found instead of stopping at the first: chunk
   * checksums, decryption and decompression, the Digest component against Data.db, and every
   * encrypted index and metadata component but those in `options.checked` (ones the caller has
   * read through already). With `signal`, an abort stops it between batches with
   * ERR_TDE_CANCELLED.
   */
  async verify(
    digestComponent?: string,
    options: { signal?: AbortSignal; checked?: readonly string[] } = {},
  ): Promise<VerifyReport> {
    const faults: Fault[] = [];
    let digest = this.checksum.initial;
    let dataChecksum = 0;

    // Batches are read and their checksums checked VERIFY_AHEAD ahead of the one being decoded,
    // so that the threads decoding one never wait for the next to be read.
    const ahead: ReturnType<SSTableReader['readStored']>[] = [];
    let next = 0;
    const refill = () => {
      while (ahead.length < VERIFY_AHEAD && next < this.chunkCount) {
        const p = this.readStored(next, this.batchEnd(next));
        // A failure of a batch read ahead surfaces when its turn comes, never as unhandled.
        p.catch(() => {});
        ahead.push(p);
        next = this.batchEnd(next);
      }
    };
    refill();
    for (let first = 0; first < this.chunkCount;) {
      if (options.signal?.aborted) {
        throw new TdeError(
          'ERR_TDE_CANCELLED',
          `${this.dataFile}: verify was interrupted at chunk ${first} of ${this.chunkCount}`,
          { file: this.dataFile, chunk: first },
        );
      }
      const end = this.batchEnd(first);
      const { region, regionSum, chunks, bad } = await (ahead.shift() as (typeof ahead)[number]);
      refill();
      digest = this.checksum.combine(digest, regionSum, region.length);
      faults.push(...bad);

      const badChunks = new Set(bad.map((f) => f.chunk));
      let decoded: (Buffer | undefined)[] = [];
      let crcs: Uint32Array | undefined;
      if (badChunks.size === 0) {
        try {
          const d = await this.decode(first, chunks, true);
          decoded = d;
          crcs = d.crcs;
        } catch {
          decoded = await this.decodeOneByOne(first, chunks, faults);
        }
      } else {
        decoded = await this.decodeOneByOne(first, chunks, faults, badChunks);
      }
      const plain = decoded.filter((d): d is Buffer => d !== undefined);
      if (crcs) {
        for (let i = 0; i < plain.length; i++)
          dataChecksum = CRC32.combine(dataChecksum, crcs[i], plain[i].length);
      } else {
        dataChecksum = (await CRC32.batch(plain, dataChecksum)).combined;
      }
      this.releaseRegion(region, plain);
      if (plain.length === decoded.length) this.recycle(plain);
      first = end;
    }

    if (digestComponent) await this.checkDigest(digestComponent, digest, faults);
    for (const component of this.encryptedComponents) {
      if (options.checked?.includes(component)) continue;
      try {
        const c = await this.openComponent(component);
        try {
          if (c instanceof EncryptedComponent) await c.forEachBatch(() => {});
        } finally {
          await c.close();
        }
      } catch (err) {
        if (!isTdeError(err)) throw err;
        faults.push({
          code: err.code,
          message: err.message,
          file: err.file ?? componentPath(this.id, component),
          ...err.context,
        } as Fault);
      }
    }

    return {
      sstable: this.name,
      chunks: this.chunkCount,
      storedBytes: this.storedLength,
      dataBytes: this.dataLength,
      dataChecksum: dataChecksum >>> 0,
      faults,
    };
  }

  private async decodeOneByOne(
    first: number,
    chunks: Buffer[],
    faults: Fault[],
    skip: Set<number | undefined> = new Set(),
  ): Promise<(Buffer | undefined)[]> {
    const out: (Buffer | undefined)[] = [];
    for (let i = 0; i < chunks.length; i++) {
      if (skip.has(first + i)) {
        out.push(undefined);
        continue;
      }
      try {
        out.push((await this.decode(first + i, [chunks[i]]))[0]);
      } catch (err) {
        if (!isTdeError(err)) throw err;
        faults.push({
          code: err.code,
          message: err.message,
          file: this.dataFile,
          ...err.context,
        } as Fault);
        out.push(undefined);
      }
    }
    return out;
  }

  private async checkDigest(component: string, actual: number, faults: Fault[]): Promise<void> {
    const file = componentPath(this.id, component);
    let text: string | undefined;
    try {
      text = await this.recordedDigest(component);
    } catch (err) {
      faults.push({ code: 'ERR_TDE_MISSING_COMPONENT', message: (err as Error).message, file });
      return;
    }
    if (text === undefined) return;
    if (!/^\d+$/.test(text) || Number(text) !== actual) {
      faults.push({
        code: 'ERR_TDE_DIGEST_MISMATCH',
        message:
          `${file} says ${JSON.stringify(text.slice(0, 20))} but Data.db's ` +
          `${this.features.checksum} is ${actual}` +
          (faults.length === 0
            ? DIGEST_ONLY_ADVICE
            : ': Data.db is damaged (see the chunk faults)'),
        file,
      });
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    // Reads and decoding still running on the pool (a read-ahead) end first, as
    // FileHandle.close() waits for its own reads: nothing of this reader runs once close() has
    // resolved, and its key is wiped only after.
    await this.pending.idle();
    this.compressor?.close();
    await this.fd.close().catch(() => {});
  }
}

/**
 * Every chunk's own checksum is right, yet the whole file's is not: either the Digest file is
 * wrong, or whole chunks (each with its checksum) were reordered or swapped in, which no chunk
 * checksum can see. Only a comparison with a backup can tell which.
 */
export const DIGEST_ONLY_ADVICE =
  ', although every chunk matches its own checksum: either the Digest file is wrong, or whole ' +
  'chunks were reordered or replaced. Compare Data.db with a backup; only if it is known to be ' +
  'good, rewrite the SSTable with --ignore-digest to give it a new digest';

function faultError(f: Fault): TdeError {
  return new TdeError(f.code, f.message, {
    file: f.file,
    chunk: f.chunk,
    offset: f.offset,
    length: f.length,
  });
}

function rethrowFor(err: unknown, file: string): unknown {
  if (!isTdeError(err)) return err;
  return new TdeError(err.code, `${file}: ${err.message}`, { ...err.context, file }, err);
}

/** Checks chunk offsets against Data.db, so no later read can go outside it or run huge. */
function checkOffsets(
  info: CompressionInfo,
  storedLength: number,
  ciFile: string,
  dataFile: string,
): void {
  const n = info.chunkOffsets.length;
  const fail = (what: string): never => {
    throw new TdeError(
      'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      `${ciFile} does not match ${dataFile}: ` +
        `${what}; one of the two files is damaged or they come from different SSTables`,
      { file: ciFile },
    );
  };
  if (n === 0) {
    if (storedLength !== 0) fail(`it lists no chunks but Data.db has ${storedLength} bytes`);
    return;
  }
  if (info.chunkOffsets[0] !== 0) fail(`the first chunk starts at ${info.chunkOffsets[0]}, not 0`);
  if (info.chunkOffsets[n - 1] + 4 > storedLength) {
    // Cut short: named by the chunk the file ends in (the first one lost), not the last listed.
    let k = n - 1;
    while (k > 0 && info.chunkOffsets[k] >= storedLength) k--;
    const after = n - 1 - k;
    fail(
      `Data.db (${storedLength} bytes) is too short for the ${n} chunks listed: it ends inside ` +
        `chunk ${k}, which starts at ${info.chunkOffsets[k]}` +
        (after > 0
          ? `, and the ${after} chunk${after === 1 ? '' : 's'} after it lie past its end`
          : ''),
    );
  }
  // Any codec or cipher Cassandra or DSE uses grows a chunk by well under a quarter plus 1 KiB.
  const maxStored = info.chunkLength + info.chunkLength / 4 + 1024;
  for (let i = 0; i < n; i++) {
    const end = i + 1 < n ? info.chunkOffsets[i + 1] : storedLength;
    const stored = end - info.chunkOffsets[i] - 4;
    if (stored < 0)
      fail(
        `chunk ${i} at ${info.chunkOffsets[i]} runs past the end of Data.db ` +
          `(${storedLength} bytes)`,
      );
    if (stored > maxStored)
      fail(
        `chunk ${i} would be ${stored} bytes, more than a ${info.chunkLength}-byte chunk can take`,
      );
  }
}

/**
 * The names in encrypted_components become file names, so only the format's index and metadata
 * components may appear, each once: a name like `../x` would open a file outside the table.
 */
function checkEncryptedComponents(
  info: CompressionInfo,
  format: SSTableFormat,
  file: string,
): void {
  const list = info.options[ENCRYPTED_COMPONENTS_OPTION];
  const names = list ? list.split(',') : [];
  const allowed = SENSITIVE_COMPONENTS[format];
  names.forEach((name, i) => {
    if (allowed.includes(name) && names.indexOf(name) === i) return;
    const why = allowed.includes(name) ? ' twice' : `; only ${allowed.join(', ')} may appear`;
    throw new TdeError(
      'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      `${file} lists ${JSON.stringify(name)} ` +
        `in ${ENCRYPTED_COMPONENTS_OPTION}${why}: the file is damaged or was edited; restore the ` +
        'SSTable from a backup',
      { file },
    );
  });
}
