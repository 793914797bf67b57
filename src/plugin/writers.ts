/**
 * The writers a plugin hands out: an SSTable writer that owns its compressor (closed when the
 * SSTable is finished or aborted) and writes index and metadata components encrypted, and
 * commit log and hints writers that count what they write and check, before each encryption,
 * that their key has not been revoked.
 */
import * as fs from 'node:fs';

import { HintsWriter } from '../commitlog/hints';
import { SegmentWriter } from '../commitlog/segment';
import type { Compressor } from '../compression/compressor';
import { TdeError } from '../errors';
import type { SystemWriteEvent } from '../metrics/observer';
import { componentPath, SSTableId } from '../sstable/descriptor';
import { SENSITIVE_COMPONENTS, transcodeComponent } from '../sstable/page-file';
import { SSTableDataWriter, WriteResult } from '../sstable/writer';
import { settleAll } from '../util/settle';

/** What a plugin lends its writers: key checks, counting, and word of their end. */
export interface WriterHooks {
  /** Throws ERR_TDE_KEY_REVOKED when `key` may no longer encrypt. */
  checkKey(key: string): void;
  written(e: SystemWriteEvent): void;
  /** The writer is done (finished, aborted or closed) and holds no key any more. */
  ended(writer: PluginWriter): void;
}

/** Any writer a plugin hands out; the plugin ends those still open when it closes. */
export interface PluginWriter {
  /** Stops the writer the way a shutdown should: see each class. */
  shutdown(): Promise<void>;
}

/** Options for {@link PluginSSTableWriter}. */
export interface SSTableWriterOptions {
  /** Permission bits of the files written (default 0644). */
  mode?: number;
  /** Digest component to write; defaults to the one Cassandra writes for the version. */
  digestComponent?: string;
}

/**
 * A new SSTable: Data.db from a stream of uncompressed bytes, index and metadata components
 * from bytes (encrypted when the table's class encrypts and the component holds partition
 * keys), then CompressionInfo.db and the Digest on {@link finish}.
 */
export class PluginSSTableWriter implements PluginWriter {
  private readonly encrypted: string[] = [];
  /** Components written with writeComponent, by name (`Index.db`). */
  private readonly components: string[] = [];
  /** Finished or aborted: the plugin no longer tracks it. */
  private ended = false;
  /** No more writes or components: finish() or abort() has been called. */
  private closed = false;
  private finishing: Promise<WriteResult> | undefined;
  /** writeComponent() calls under way, which finish() and abort() wait for. */
  private readonly componentWrites = new Set<Promise<unknown>>();

  private constructor(
    readonly id: SSTableId,
    /** The table's compressor; closed by finish() and abort(). */
    readonly compressor: Compressor | undefined,
    private readonly writer: SSTableDataWriter,
    private readonly mode: number,
    private readonly hooks: WriterHooks,
  ) {}

  /** @internal made by TdePlugin.createWriter. */
  static async create(
    id: SSTableId,
    compressor: Compressor | undefined,
    params: Compressor['params'],
    options: SSTableWriterOptions,
    hooks: WriterHooks,
  ): Promise<PluginSSTableWriter> {
    const writer = await SSTableDataWriter.create({
      id,
      params,
      compressor,
      mode: options.mode,
      digestComponent: options.digestComponent,
    });
    return new PluginSSTableWriter(id, compressor, writer, options.mode ?? 0o644, hooks);
  }

  /** Data.db's path. */
  get dataFile(): string {
    return this.writer.dataFile;
  }

  /** Every file written so far. */
  get files(): string[] {
    return [...this.writer.files, ...this.components.map((c) => componentPath(this.id, c))];
  }

  /** Appends uncompressed data; calls made without waiting are queued in order. */
  write(data: ArrayBufferView | ArrayBuffer): Promise<void> {
    return this.writer.write(data);
  }

  /**
   * Writes a whole component (for example `Index.db` or `Statistics.db`) from its plain bytes.
   * Components that hold partition keys are stored encrypted, page by page, when the table's
   * class encrypts; readers decrypt them with `reader.openComponent(name)`.
   */
  async writeComponent(component: string, data: Uint8Array): Promise<void> {
    if (this.closed) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `writeComponent(${component}) after finish() or abort()`,
      );
    }
    const own =
      ['Data.db', 'CompressionInfo.db', 'CRC.db'].includes(component) ||
      component.startsWith('Digest.');
    if (!/^[A-Za-z0-9_.-]+$/.test(component) || own) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `"${component}" is not a component the caller writes ` +
          '(Data.db, CompressionInfo.db, CRC.db and Digest are written by the writer itself)',
      );
    }
    if (this.components.includes(component)) {
      throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${component} was written already`);
    }
    const sensitive = SENSITIVE_COMPONENTS[this.id.format].includes(component);
    const codec = sensitive ? this.compressor?.pageCodec?.(component, this.writer.id) : undefined;
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const source = {
      size: bytes.length,
      read: async (position: number, length: number) => bytes.subarray(position, position + length),
    };
    this.components.push(component);
    const writing = transcodeComponent(source, componentPath(this.id, component), codec, this.mode);
    this.componentWrites.add(writing);
    try {
      await writing;
      if (codec) this.encrypted.push(component);
    } finally {
      this.componentWrites.delete(writing);
    }
  }

  /**
   * Flushes and syncs everything, writes CompressionInfo.db and the Digest, wipes the key. If it
   * fails, the files written stay until abort() (or the plugin's close()) removes them.
   */
  finish(): Promise<WriteResult> {
    // A second call is refused, and touches nothing of the first.
    if (this.finishing) {
      return Promise.reject(
        new TdeError(
          'ERR_TDE_INVALID_ARGUMENT',
          'finish() was called already: its promise tells how it went (after a failed one, ' +
            'abort() removes what was written)',
        ),
      );
    }
    this.closed = true;
    this.finishing = (async () => {
      try {
        // Components still being written go in first: their files must be complete, and the
        // encrypted ones named in CompressionInfo.db.
        await settleAll([...this.componentWrites]);
        const result = await this.writer.finish({ encryptedComponents: this.encrypted });
        this.end();
        return { ...result, components: [...result.components, ...this.components] };
      } finally {
        // The key goes now either way; the writer stays registered with the plugin until its
        // files are accounted for (finished, or removed by abort()).
        this.compressor?.close();
      }
    })();
    return this.finishing;
  }

  /**
   * Stops and removes every file written, and wipes the key. After a finish() that succeeded
   * (or once one under way succeeds) it does nothing: a complete SSTable is never removed here.
   */
  async abort(): Promise<void> {
    if (this.finishing) {
      const finished = await this.finishing.then(
        () => true,
        () => false,
      );
      if (finished) return;
    }
    this.closed = true;
    try {
      await Promise.allSettled([...this.componentWrites]);
      await this.writer.abort();
      for (const c of this.components) {
        await fs.promises.rm(componentPath(this.id, c), { force: true });
      }
    } finally {
      this.end();
    }
  }

  /** A shutdown aborts an SSTable not finished: like a flush that did not complete. */
  shutdown(): Promise<void> {
    return this.ended ? Promise.resolve() : this.abort();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.closed = true;
    this.compressor?.close();
    this.hooks.ended(this);
  }
}

/**
 * A commit log segment. Entries are kept here until {@link sync}, which checks the key, then
 * encrypts and writes them as one section: if the key was revoked meanwhile, nothing is written
 * with it, and {@link pendingEntries} gives the entries back to append to a new segment.
 */
export class PluginSegmentWriter implements PluginWriter {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  /** @internal made by TdePlugin.commitLogWriter. */
  constructor(
    private readonly inner: SegmentWriter,
    /** The key's name: a key file name or `kmip://GROUP/ID`. */
    readonly keyAlias: string,
    private readonly hooks: WriterHooks,
  ) {}

  /** The segment's path. */
  get file(): string {
    return this.inner.file;
  }

  /** Adds one entry (a serialized mutation); it is durable once the next sync() resolves. */
  append(entry: Uint8Array): void {
    if (this.closed) throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${this.file} is closed`);
    if (!(entry instanceof Uint8Array)) {
      throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'append() takes the bytes of one entry');
    }
    this.pending.push(entry);
    this.pendingBytes += entry.length;
  }

  /** Entries appended since the last sync that succeeded (not yet on disk). */
  pendingEntries(): Uint8Array[] {
    return [...this.pending];
  }

  /** Bytes appended but not yet synced. */
  get unsynced(): number {
    return this.pendingBytes;
  }

  /** Encrypts and writes what was appended as one section, and syncs it. */
  sync(): Promise<void> {
    const run = this.queue.then(() => this.sync1());
    this.queue = run.catch(() => {});
    return run;
  }

  private async sync1(): Promise<void> {
    if (this.pending.length === 0) return;
    this.hooks.checkKey(this.keyAlias);
    const entries = this.pending;
    const bytes = this.pendingBytes;
    for (const e of entries) this.inner.append(e);
    await this.inner.sync();
    // Appends made while this sync ran stay pending for the next one.
    this.pending = this.pending.slice(entries.length);
    this.pendingBytes -= bytes;
    this.hooks.written({ kind: 'commitlog', count: entries.length, bytes });
  }

  /** Syncs what is pending and closes the segment, wiping its key. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.sync();
    } finally {
      this.closed = true;
      // Nothing is pending in the inner writer (only sync hands it entries): closing it
      // encrypts nothing more, whatever the state of the key.
      await this.queue;
      await this.inner.close();
      this.hooks.ended(this);
    }
  }

  /** A shutdown syncs what it can and closes; entries a revoked key refused stay pending. */
  shutdown(): Promise<void> {
    return this.close();
  }
}

/** A hints file: every write() is encrypted at once, after checking that the key may encrypt. */
export class PluginHintsWriter implements PluginWriter {
  private closed = false;

  /** @internal made by TdePlugin.hintsWriter. */
  constructor(
    private readonly inner: HintsWriter,
    readonly keyAlias: string,
    private readonly hooks: WriterHooks,
  ) {}

  /** Writes hints (each serialized) as encrypted blocks. */
  async write(hints: Uint8Array[]): Promise<void> {
    if (this.closed) throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'this hints file is closed');
    this.hooks.checkKey(this.keyAlias);
    await this.inner.write(hints);
    let bytes = 0;
    for (const h of hints) bytes += h.length;
    this.hooks.written({ kind: 'hints', count: hints.length, bytes });
  }

  /** Syncs the file, writes its checksum file and wipes the key. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.inner.close();
    } finally {
      this.hooks.ended(this);
    }
  }

  /** A shutdown closes the file (nothing is pending: every write() was written at once). */
  shutdown(): Promise<void> {
    return this.close();
  }
}
