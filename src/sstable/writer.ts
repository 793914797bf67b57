/**
 * Writes a new SSTable's Data.db from a stream of uncompressed bytes, with what makes it checkable:
 * CompressionInfo.db (compressed, possibly encrypted) or CRC.db (uncompressed), chunk checksums,
 * and the Digest component. Other components (Index, Statistics, ...) are the caller's business:
 * they hold positions in the uncompressed data, which re-chunking leaves valid.
 *
 * Files are created exclusively (an existing file is never overwritten) and fsynced by finish().
 */
import * as fs from 'node:fs';

import { Checksum, checksumFor } from '../checksum';
import {
  ChunkBinding,
  ENCRYPTED_COMPONENTS_OPTION,
  newSSTableId,
  SSTABLE_ID_OPTION,
  SSTABLE_TAG_OPTION,
} from '../compression/binding';
import { Compressor, EncodedChunks } from '../compression/compressor';
import { CompressionParams } from '../compression/options';
import { fromSystem, TdeError } from '../errors';
import { native } from '../native';

/** Batches at most between compression and disk: one being written while the next compresses. */
const IN_FLIGHT = 2;
import { CompressionInfo, NEVER_UNCOMPRESSED, serializeCompressionInfo } from './compression-info';
import { serializeCrcDb } from './crc-db';
import { writevFully } from '../util/files';
import { settleAll } from '../util/settle';
import {
  checkId,
  componentPath,
  featuresOf,
  MAX_GENERATION,
  SSTableFormat,
  SSTableId,
  VersionFeatures,
} from './descriptor';
import { SENSITIVE_COMPONENTS } from './page-file';

export interface DataWriterOptions {
  /** The new SSTable: directory, version, generation and format. */
  id: SSTableId;
  params: CompressionParams;
  /** Required when params.enabled; it decides the class name and options recorded. */
  compressor?: Compressor;
  /** Digest component to write; defaults to the one Cassandra writes for the version. */
  digestComponent?: string;
  /** Permission bits of the files written (default 0644); set exactly, whatever the umask. */
  mode?: number;
}

export interface WriteResult {
  /** Component names written (Data.db and its companions). */
  components: string[];
  dataLength: number;
  storedLength: number;
  chunkCount: number;
  /**
   * Each companion component's bytes as written (CompressionInfo.db or CRC.db, and the digest),
   * by component name: for a caller that checks the files on disk before trusting them.
   */
  companions: Map<string, Buffer>;
}

/**
 * Data.db bytes appended between requests to start writing them to disk: large enough that the
 * requests cost nothing, small enough that the disk starts early.
 */
const WRITEBACK_BYTES = 8 * 1024 * 1024;

/** Uncompressed tables: CRC.db slice size, as Cassandra writes it. */
const CRC_CHUNK = 65536;
/** Uncompressed bytes handed to the compressor at once. */
const BATCH_BYTES = 4 * 1024 * 1024;

export class SSTableDataWriter {
  private readonly features: VersionFeatures;
  private readonly checksum: Checksum;
  private readonly chunkLength: number;
  private readonly batchChunks: number;
  private readonly created: string[] = [];

  private fd: fs.promises.FileHandle | undefined;
  private current: Buffer;
  /** Where copied chunks are cut from, and how many of its slots are handed out. */
  private region: Buffer | undefined;
  private regionSlots = 0;
  private filled = 0;
  private pending: Buffer[] = [];
  /** The last batch sent on, settled once it is on disk (or failed), and all still in flight. */
  private inflight: Promise<void> = Promise.resolve();
  private flights: Promise<void>[] = [];
  private failed: unknown;

  private dataLength = 0;
  private position = 0;
  private digest: number;
  private readonly offsets: number[] = [];
  private readonly sliceChecksums: number[] = [];
  private finished = false;
  private aborted = false;
  /** Once finish() is called: whether it succeeded, when it has settled. */
  private finishing: Promise<boolean> | undefined;
  private finishFailed = false;
  /** Calls run one after another, in the order made: concurrent writes must not interleave. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Chunks handed to the compressor so far: the index of the next batch's first chunk. */
  private chunksSent = 0;
  /** Chunks handed to the pipeline so far, and how many of them are on disk. */
  private chunksQueued = 0;
  private chunksWritten = 0;
  /** Callers waiting for their kept bytes to be on disk (write's `released`). */
  private waiting: { chunks: number; fn: () => void }[] = [];
  /** For authenticated chunks: this SSTable's random id (see compression/binding.ts). */
  private readonly sstableId: Buffer | undefined;
  /** Data.db bytes handed to startWriteback so far, and the last such request. */
  private writtenBack = 0;
  private writeback: Promise<void> = Promise.resolve();
  private readonly companions = new Map<string, Buffer>();

  private constructor(private readonly options: DataWriterOptions) {
    this.features = featuresOf(options.id);
    this.checksum = checksumFor(this.features.checksum);
    this.digest = this.checksum.initial;
    this.chunkLength = options.params.enabled ? options.params.chunkLength : CRC_CHUNK;
    this.batchChunks = Math.max(1, Math.floor(BATCH_BYTES / this.chunkLength));
    this.current = this.nextChunkBuffer();
    if (options.params.enabled && !options.compressor) {
      throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'a compressed SSTable needs a compressor');
    }
    this.sstableId = options.compressor?.authenticated ? newSSTableId() : undefined;
  }

  /** Creates Data.db exclusively; fails if any file of the new SSTable exists already. */
  static async create(options: DataWriterOptions): Promise<SSTableDataWriter> {
    checkId(options.id);
    const { generation } = options.id;
    if (/^\d+$/.test(generation) && BigInt(generation) > MAX_GENERATION) {
      throw new TdeError(
        'ERR_TDE_BAD_SSTABLE_NAME',
        `generation ${generation} is past ${MAX_GENERATION}, the largest Cassandra reads (a ` +
          'Java int): an SSTable written under it would never be loaded; use a smaller one',
      );
    }
    const w = new SSTableDataWriter(options);
    w.fd = await w.createFile('Data.db');
    return w;
  }

  /** Every file this writer created. */
  get files(): string[] {
    return [...this.created];
  }

  get dataFile(): string {
    return componentPath(this.options.id, 'Data.db');
  }

  private async createFile(component: string): Promise<fs.promises.FileHandle> {
    const file = componentPath(this.options.id, component);
    const mode = this.options.mode ?? 0o644;
    try {
      // Created owner-only, then given its final mode: data that may be plaintext is never
      // readable by others while it is being written unless the final mode says so.
      const fd = await fs.promises.open(file, 'wx', 0o600);
      this.created.push(file);
      try {
        await fd.chmod(mode);
      } catch (err) {
        await fd.close();
        throw err;
      }
      return fd;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TdeError(
          'ERR_TDE_IO',
          `${file} already exists; it is never overwritten. Write the SSTable under a new ` +
            'generation, or remove the files of the one left there (an interrupted ' +
            'upgradesstables run removes its own when run again)',
          { file },
          err,
        );
      }
      throw fromSystem(err, file, 'create');
    }
  }

  private enqueue<T>(step: () => Promise<T>): Promise<T> {
    const run = this.queue.then(step, step);
    this.queue = run.catch(() => {});
    return run;
  }

  private checkOpen(call: string): void {
    if (this.aborted)
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${call} after abort(): this writer is closed`,
      );
    if (this.finished)
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        this.finishFailed
          ? `${call} after a finish() that failed: abort() removes what was written`
          : `${call} after finish(): the SSTable is complete`,
      );
  }

  /**
   * Appends uncompressed bytes (any ArrayBufferView or ArrayBuffer, taken as its bytes). Calls
   * made without waiting for the previous one are queued in order.
   *
   * With `{ keep: true }` the caller hands the bytes over: whole chunks of them are used in place
   * instead of copied, so they must not be changed until `released` is called (once they are on
   * disk, or the writer is aborted), or else until finish() or abort() has settled.
   */
  write(
    data: ArrayBufferView | ArrayBuffer,
    options: { keep?: boolean; released?: () => void } = {},
  ): Promise<void> {
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data))
      bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      return Promise.reject(
        new TdeError(
          'ERR_TDE_INVALID_ARGUMENT',
          `write() takes bytes (a Buffer, Uint8Array or ` +
            `other ArrayBufferView), not ${data === null ? 'null' : typeof data}`,
        ),
      );
    }
    try {
      this.checkOpen('write()');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.enqueue(async () => {
      await this.append1(bytes, options.keep === true);
      if (options.released) this.onWritten(this.chunksQueued, options.released);
    });
  }

  /** Calls `fn` once the first `chunks` chunks are on disk (at once if they are, or on abort). */
  private onWritten(chunks: number, fn: () => void): void {
    if (this.chunksWritten >= chunks || this.aborted) fn();
    else this.waiting.push({ chunks, fn });
  }

  private notifyWritten(all = false): void {
    const ready = this.waiting.filter((w) => all || w.chunks <= this.chunksWritten);
    this.waiting = this.waiting.filter((w) => !ready.includes(w));
    for (const w of ready) w.fn();
  }

  private async append1(data: Uint8Array, keep: boolean): Promise<void> {
    // A write queued before finish() still belongs to the SSTable; one after abort() does not.
    if (this.aborted)
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        'write() after abort(): this writer is closed',
      );
    let at = 0;
    while (at < data.length) {
      if (keep && this.filled === 0 && data.length - at >= this.chunkLength) {
        this.pending.push(Buffer.from(data.buffer, data.byteOffset + at, this.chunkLength));
        this.chunksQueued++;
        at += this.chunkLength;
        if (this.pending.length > this.batchChunks) await this.flush(false);
        continue;
      }
      const n = Math.min(this.chunkLength - this.filled, data.length - at);
      this.current.set(data.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === this.chunkLength) {
        this.pending.push(this.current);
        this.chunksQueued++;
        this.current = this.nextChunkBuffer();
        this.filled = 0;
        // One chunk is always held back, so that the last chunk of the SSTable is known to be
        // last when it is encrypted (authenticated chunks mark it).
        if (this.pending.length > this.batchChunks) await this.flush(false);
      }
    }
  }

  /**
   * Memory for the next chunk that is copied in: cut from a region of batchChunks slots, so that
   * when every chunk is copied (batches are chunks [k * batchChunks, (k + 1) * batchChunks)) a
   * batch goes to the addon in one hand-over rather than a buffer at a time (util/slabs.ts
   * asSpans), which on small chunks costs as much as encrypting them. Slots are counted apart
   * from the chunks queued, since kept chunks take none: each slot is handed out once, and a
   * region is never reused, so no chunk's memory is ever handed out again.
   */
  private nextChunkBuffer(): Buffer {
    if (!this.region || this.regionSlots === this.batchChunks) {
      this.region = Buffer.allocUnsafeSlow(this.batchChunks * this.chunkLength);
      this.regionSlots = 0;
    }
    const slot = this.regionSlots++;
    return this.region.subarray(slot * this.chunkLength, (slot + 1) * this.chunkLength);
  }

  /**
   * Sends the pending chunks on. Compression of this batch starts at once, while earlier
   * batches are still being written; at most IN_FLIGHT batches are between compression and disk,
   * and they reach the file in order.
   */
  private async flush(final: boolean): Promise<void> {
    const batch = final ? this.pending : this.pending.slice(0, -1);
    this.pending = final ? [] : this.pending.slice(-1);
    if (batch.length === 0) return;
    while (this.flights.length >= IN_FLIGHT)
      await (this.flights.shift() as Promise<void>).catch(() => {});
    if (this.failed) throw this.failed;

    const binding: ChunkBinding | undefined = this.sstableId && {
      sstableId: this.sstableId,
      first: this.chunksSent,
      last: final ? this.chunksSent + batch.length - 1 : undefined,
    };
    this.chunksSent += batch.length;
    const encoded = this.options.params.enabled
      ? (this.options.compressor as Compressor).compressBatch(batch, binding, {
          sums: this.checksum.type,
        })
      : Promise.resolve(batch);
    // Appended after the batch before it (and not at all if that one failed). A failure to encode
    // is reported only once the batch before is on disk, so that abort(), which waits for the
    // last batch, never closes the file under an append still running.
    encoded.catch(() => {});
    const previous = this.inflight;
    this.inflight = previous.then(() => encoded).then((stored) => this.append(batch, stored));
    this.inflight.catch((err) => (this.failed ??= err));
    this.flights.push(this.inflight);
  }

  private async append(plain: Buffer[], stored: EncodedChunks): Promise<void> {
    const fd = this.fd as fs.promises.FileHandle;
    const max = this.options.params.maxCompressedLength;
    const compressed = this.options.params.enabled;

    // na and later: a chunk that does not compress below maxCompressedLength is stored raw,
    // padded to that length so a reader can tell (never done for encrypting classes).
    const chunks = stored.map((chunk, i) => {
      if (
        !compressed ||
        max === undefined ||
        !this.features.hasMaxCompressedLength ||
        chunk.length < max
      )
        return chunk;
      return plain[i].length >= max
        ? plain[i]
        : Buffer.concat([plain[i], Buffer.alloc(max - plain[i].length)]);
    });

    // Chunk checksums and the running digest: compressed chunks are framed by their checksums in
    // Data.db, uncompressed data is checksummed as it lies (CRC.db). The addon's compressors
    // checksum each chunk as they encode it, so only the digest is left to fold; other batches
    // (and one with a chunk stored raw) take a pass on the thread pool.
    let sums = stored.sums;
    if (sums && chunks.every((chunk, i) => chunk === stored[i])) {
      const lengths = chunks.map((chunk) => chunk.length);
      this.digest = this.checksum.fold(sums, lengths, this.digest, compressed);
    } else {
      const pass = await this.checksum.batch(chunks, this.digest, compressed);
      sums = pass.sums;
      this.digest = pass.combined;
    }
    const pieces: Buffer[] = [];
    const framing = compressed ? Buffer.allocUnsafe(4 * chunks.length) : undefined;
    for (let i = 0; i < chunks.length; i++) {
      this.dataLength += plain[i].length;
      if (!framing) {
        this.sliceChecksums.push(sums[i]);
        this.position += chunks[i].length;
        pieces.push(chunks[i]);
        continue;
      }
      const sum = framing.subarray(4 * i, 4 * i + 4);
      sum.writeUInt32BE(sums[i], 0);
      this.offsets.push(this.position);
      this.position += chunks[i].length + 4;
      pieces.push(chunks[i], sum);
    }

    try {
      await writevFully(fd, pieces);
    } catch (err) {
      throw fromSystem(err, this.dataFile, 'write');
    }
    if (compressed) (this.options.compressor as Compressor).recycle(stored);
    this.chunksWritten += plain.length;
    this.notifyWritten();
    this.startWriteback(fd);
  }

  /**
   * Has the kernel start writing what was appended since the last call to disk, once there is
   * WRITEBACK_BYTES of it, without waiting: otherwise a whole SSTable can sit in the page cache
   * until finish()'s fsync, the disk idle while chunks are encoded. (The tail is the fsync's.)
   */
  private startWriteback(fd: fs.promises.FileHandle): void {
    const length = this.position - this.writtenBack;
    if (length < WRITEBACK_BYTES) return;
    const offset = this.writtenBack;
    this.writtenBack = this.position;
    // One request at a time, and all of them settled before the descriptor is closed; none for
    // a handle already closed (fd -1), and no failure of this hint ever reaches the caller.
    this.writeback = this.writeback
      .then(async () => {
        if (fd.fd >= 0) await native().startWriteback(fd.fd, offset, length);
      })
      .catch(() => {});
  }

  /** This SSTable's random id, when its compressor authenticates chunks (page codecs need it). */
  get id(): Buffer | undefined {
    return this.sstableId;
  }

  /**
   * Flushes everything, writes the companion components and fsyncs every file written.
   * `encryptedComponents` names the index and metadata components the caller wrote encrypted
   * (page-file.ts), so that readers know to decrypt them.
   */
  finish(options: { encryptedComponents?: string[] } = {}): Promise<WriteResult> {
    try {
      this.checkOpen('finish()');
      checkComponentNames(this.options.id.format, options.encryptedComponents ?? []);
    } catch (err) {
      return Promise.reject(err);
    }
    const done = this.enqueue(() => this.finish1(options.encryptedComponents ?? []));
    // Later calls are refused at once rather than queued behind a finish.
    this.finished = true;
    this.finishing = done.then(
      () => true,
      () => {
        this.finishFailed = true;
        return false;
      },
    );
    return done;
  }

  private async finish1(encryptedComponents: string[]): Promise<WriteResult> {
    if (this.filled > 0) this.pending.push(this.current.subarray(0, this.filled));
    this.filled = 0;
    await this.flush(true);
    await this.inflight;
    if (this.failed) throw this.failed;

    // Data.db's sync runs while the companions are written and synced: the file system can
    // commit them together, and finish() resolves only once every one of them is durable.
    const fd = this.fd as fs.promises.FileHandle;
    const dataSynced = (async () => {
      await this.writeback;
      try {
        await fd.sync();
        await fd.close();
      } catch (err) {
        throw fromSystem(err, this.dataFile, 'sync');
      }
      this.fd = undefined;
    })();
    const companions: [string, Buffer][] = [];

    const components = ['Data.db'];
    const { params, compressor } = this.options;
    if (params.enabled) {
      const c = compressor as Compressor;
      const options = c.compressionInfoOptions();
      const encrypted = encryptedComponents.join(',');
      if (encrypted !== '') options[ENCRYPTED_COMPONENTS_OPTION] = encrypted;
      if (this.sstableId && c.sealMetadata) {
        options[SSTABLE_ID_OPTION] = this.sstableId.toString('hex');
        options[SSTABLE_TAG_OPTION] = c.sealMetadata({
          className: c.className,
          sstableId: this.sstableId,
          chunkLength: this.chunkLength,
          dataLength: this.dataLength,
          chunkCount: this.offsets.length,
          encryptedComponents: encrypted,
        });
      }
      const info: CompressionInfo = {
        className: c.className,
        options,
        chunkLength: this.chunkLength,
        maxCompressedLength: c.encrypting
          ? NEVER_UNCOMPRESSED
          : (params.maxCompressedLength ?? NEVER_UNCOMPRESSED),
        dataLength: this.dataLength,
        chunkOffsets: this.offsets,
      };
      companions.push([
        'CompressionInfo.db',
        serializeCompressionInfo(info, this.features.hasMaxCompressedLength),
      ]);
    } else {
      const crc = serializeCrcDb({
        chunkLength: CRC_CHUNK,
        checksums: Uint32Array.from(this.sliceChecksums),
      });
      companions.push(['CRC.db', crc]);
    }
    const digestComponent = this.options.digestComponent ?? this.features.digestComponent;
    companions.push([digestComponent, Buffer.from(String(this.digest >>> 0))]);

    // Every write settles before a failure is thrown: abort() must not remove a file still open.
    await settleAll([
      dataSynced,
      ...companions.map(([component, data]) => this.writeComponent(component, data)),
    ]);
    for (const [component, data] of companions) {
      components.push(component);
      this.companions.set(component, data);
    }

    return {
      components,
      dataLength: this.dataLength,
      storedLength: this.position,
      chunkCount: params.enabled ? this.offsets.length : this.sliceChecksums.length,
      companions: this.companions,
    };
  }

  private async writeComponent(component: string, data: Buffer): Promise<void> {
    const fd = await this.createFile(component);
    const file = componentPath(this.options.id, component);
    try {
      await fd.writeFile(data);
      await fd.sync();
    } catch (err) {
      throw fromSystem(err, file, 'write');
    } finally {
      await fd.close();
    }
  }

  /**
   * Stops an unfinished writer and removes every file it created. After a finish() that
   * succeeded (or once one under way succeeds) it does nothing: the SSTable is complete and
   * durable, and is never removed here. After a finish() that failed it removes what is left.
   */
  async abort(): Promise<void> {
    if (this.finishing && (await this.finishing)) return;
    this.aborted = true;
    this.finished = true;
    await this.queue;
    await this.inflight.catch(() => {});
    this.notifyWritten(true);
    await this.writeback;
    await this.fd?.close().catch(() => {});
    this.fd = undefined;
    for (const f of this.created) await fs.promises.rm(f, { force: true });
  }
}

/**
 * Readers open what encrypted_components names, so only index and metadata components may go in.
 */
function checkComponentNames(format: SSTableFormat, names: string[]): void {
  const allowed = SENSITIVE_COMPONENTS[format];
  const bad = names.find((name, i) => !allowed.includes(name) || names.indexOf(name) !== i);
  if (bad !== undefined) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `finish(): encryptedComponents may name only ` +
        `${allowed.join(', ')}, each once; got ${JSON.stringify(bad)}`,
    );
  }
}
