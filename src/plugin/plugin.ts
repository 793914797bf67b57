/**
 * The plugin as a storage process sees it: `openPlugin` once at start, then compressors, SSTable
 * readers and writers, and commit log and hints writers for as long as the process runs, with
 * events and metrics on the way; `close()` at shutdown.
 *
 * A thin facade: the work is done by the modules it wires together (config, keys, compression,
 * sstable, commitlog, tools). What it adds is start-up checks (every KMIP group reachable, the
 * system keys present), one set of counters and events, the key-state poll, and an orderly end.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { resolveCipher } from '../cipher/transformation';
import { HintsFileNames, HintsWriter } from '../commitlog/hints';
import { SegmentEncryption, SegmentWriter } from '../commitlog/segment';
import { systemInfoKey } from '../commitlog/system';
import { Compressor, compressorForTable } from '../compression/compressor';
import { KMIP_PROVIDER, parseTableCompression } from '../compression/options';
import {
  configFromObject,
  parseKmipUrl,
  readConfig,
  SystemInfoEncryption,
  TdeConfig,
} from '../config/config';
import { addressString } from '../kmip/transport';
import { loadConfig, LoadedConfig } from '../config/secure-values';
import { ErrorCodeName, isTdeError, TdeError } from '../errors';
import { createKmipKey } from '../keys/kmip-admin';
import { createKeyFile } from '../keys/key-file';
import { KeyProviders } from '../keys/provider';
import { MetricsSnapshot, TdeEvents, TdeMetrics } from '../metrics/metrics';
import { SystemWriteEvent, TdeObserver } from '../metrics/observer';
import { SSTableId } from '../sstable/descriptor';
import { SSTableReader } from '../sstable/reader';
import {
  openDataDirectory,
  OpenDataDirectoryOptions,
  OpenedDataDirectory,
} from '../tools/open-data-dir';
import { KeyStatePoller } from './key-state';
import {
  PluginHintsWriter,
  PluginSegmentWriter,
  PluginSSTableWriter,
  PluginWriter,
  SSTableWriterOptions,
  WriterHooks,
} from './writers';

/** What to do when the key-state poll finds a key in use revoked, destroyed or compromised. */
export type OnKeyRevoked = 'stop' | 'warn';

/** The default interval of the key-state poll: one minute. */
export const DEFAULT_KEY_STATE_POLL_MILLIS = 60000;

/** Options of {@link openPlugin}. */
export interface PluginOptions {
  /**
   * The configuration: a dse.yaml path (protected values are decrypted, as with loadConfig), a
   * config already validated (readConfig, configFromObject), or a parsed dse.yaml object.
   */
  config: string | TdeConfig | Record<string, unknown>;
  /** With a config path: the cassandra.yaml to decrypt as well (default: the one beside it). */
  cassandraYaml?: string;
  /**
   * How often (ms) to ask KMIP for the state of the keys in use; 0 turns the poll off. Default
   * {@link DEFAULT_KEY_STATE_POLL_MILLIS}. Only KMIP keys have a state to poll.
   */
  keyStatePollMillis?: number;
  /**
   * `stop` (default): a key found revoked, destroyed or compromised encrypts nothing more from
   * that moment, whatever is cached; `warn`: only the `keyRevoked` event, and the key stops being
   * chosen when its cached choice expires (`key_cache_millis`).
   */
  onKeyRevoked?: OnKeyRevoked;
}

/** What {@link TdePlugin.rotateKey} did. */
export interface RotatedKey {
  /** The new key: a key file name, or `kmip://GROUP/ID`. */
  key: string;
  /** The key it replaces for new data. */
  previous?: string;
  /**
   * The table options to use from now on: the same for KMIP (the newest key is chosen), with
   * `system_key_file` naming the new file for local keys. Keep the old key file: SSTables
   * written with it need it until they are rewritten.
   */
  tableOptions: Record<string, unknown>;
}

/** Options of {@link TdePlugin.compressorFor}. */
export interface CompressorForOptions {
  /** Chunk length when the options name none (default 64 KiB). */
  defaultChunkLength?: number;
}

/** Options of {@link TdePlugin.createWriter}. */
export type CreateWriterOptions = SSTableWriterOptions & CompressorForOptions;

function isTdeConfig(c: unknown): c is TdeConfig {
  return (
    typeof c === 'object' &&
    c !== null &&
    (c as TdeConfig).kmipHosts instanceof Map &&
    typeof (c as TdeConfig).systemKeyDirectory === 'string'
  );
}

function checkOptions(o: PluginOptions): void {
  if (o === null || typeof o !== 'object' || o.config === undefined || o.config === null) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      'openPlugin needs { config }: a dse.yaml path or object',
    );
  }
  const poll = o.keyStatePollMillis;
  if (poll !== undefined && (!Number.isInteger(poll) || poll < 0 || poll > 86400000)) {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      'keyStatePollMillis must be a whole number of ' +
        `milliseconds from 0 (off) to 86400000, not ${JSON.stringify(poll)}`,
    );
  }
  if (o.onKeyRevoked !== undefined && o.onKeyRevoked !== 'stop' && o.onKeyRevoked !== 'warn') {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `onKeyRevoked must be "stop" or "warn", not ${JSON.stringify(o.onKeyRevoked)}`,
    );
  }
}

/**
 * Opens the plugin: validates the configuration, connects to every KMIP group it names (start-up
 * fails, as DSE's does, when a group cannot be reached, naming the group, its hosts and each
 * cause), decrypts protected configuration values, loads the system_info_encryption key, and
 * starts the key-state poll.
 */
export async function openPlugin(options: PluginOptions): Promise<TdePlugin> {
  checkOptions(options);
  const file = typeof options.config === 'string' ? options.config : undefined;
  const base =
    file !== undefined
      ? readConfig(file)
      : isTdeConfig(options.config)
        ? options.config
        : configFromObject(options.config);

  const plugin = new TdePlugin(base, options);
  try {
    await plugin.start(file, options.cassandraYaml);
  } catch (err) {
    await plugin.close().catch(() => {});
    throw err;
  }
  return plugin;
}

/**
 * One loaded plugin. Every method may be called from any number of concurrent tasks; several
 * plugins may be open in one process and in worker threads, each with its own keys, caches and
 * counters. Events are listed in {@link TdeEvents}; listeners must not throw.
 */
export class TdePlugin extends EventEmitter<TdeEvents> {
  /** The keys, for calls this facade does not cover (upgradeSSTables, ...). */
  readonly keys: KeyProviders;
  private cfg: TdeConfig | LoadedConfig;
  private readonly counters: TdeMetrics;
  private readonly onKeyRevoked: OnKeyRevoked;
  private readonly poller: KeyStatePoller;
  /** Encrypting compressors not yet closed (SSTable readers' and writers' alike). */
  private readonly compressors = new Set<Compressor>();
  private readonly writers = new Set<PluginWriter>();
  /** Keys stopped by the key-state poll, with the state found. */
  private readonly stopped = new Map<string, string>();
  private closing: Promise<void> | undefined;
  private readonly inflight = new Set<Promise<unknown>>();

  /** @internal use {@link openPlugin}. */
  constructor(config: TdeConfig, options: PluginOptions) {
    super();
    this.cfg = config;
    this.counters = new TdeMetrics(this);
    this.onKeyRevoked = options.onKeyRevoked ?? 'stop';
    const observer: TdeObserver = {
      keyLookup: (e) => this.counters.keyLookup(e),
      keyFetched: (e) => this.counters.keyFetched(e),
      keyFetchFailed: (e) => this.counters.keyFetchFailed(e),
      keyRotated: (e) => this.counters.keyRotated(e),
      kmipRequest: (e) => this.counters.kmipRequest(e),
      kmipFailover: (e) => this.counters.kmipFailover(e),
      cipherWork: (e) => this.counters.cipherWork(e),
      integrityFailure: (e) => this.counters.integrityFailure(e),
      systemWrite: (e) => this.counters.systemWrite(e),
      compressorOpened: (c) => this.compressors.add(c),
      compressorClosed: (c) => this.compressors.delete(c),
      checkEncryptionKey: (key) => this.checkKey(key),
    };
    this.keys = new KeyProviders(config, { observer });
    this.poller = new KeyStatePoller({
      intervalMs: options.keyStatePollMillis ?? DEFAULT_KEY_STATE_POLL_MILLIS,
      kmip: this.keys.kmipProvider,
      inUse: () => this.keysInUse(),
      revoked: (key, state) => this.revoked(key, state),
      failed: (e) => this.counters.keyStatePollFailed(e),
    });
  }

  /** @internal the start-up steps of {@link openPlugin}. */
  async start(file: string | undefined, cassandraYaml: string | undefined): Promise<void> {
    await this.connectAll();
    if (file !== undefined) this.cfg = await loadConfig(file, { keys: this.keys, cassandraYaml });
    const s = this.cfg.systemInfoEncryption;
    if (s?.enabled) {
      try {
        const key = await systemInfoKey(this.cfg, this.keys);
        (key.key as Buffer).fill(0);
      } catch (err) {
        if (!isTdeError(err)) throw err;
        throw new TdeError(
          err.code,
          "cannot start: system_info_encryption's key cannot be " + `loaded: ${err.message}`,
          err.context,
          err,
        );
      }
    }
    if (this.cfg.kmipHosts.size > 0) this.poller.start();
  }

  /** Asks every KMIP group once, in parallel; any that fails stops start-up. */
  private async connectAll(): Promise<void> {
    const groups = [...this.cfg.kmipHosts.values()];
    const failures: { group: string; hosts: string; err: unknown }[] = [];
    await Promise.all(
      groups.map(async (g) => {
        try {
          await this.keys.kmipProvider.client(g.name).query(['QueryOperations']);
        } catch (err) {
          failures.push({ group: g.name, hosts: g.hosts.map(addressString).join(', '), err });
        }
      }),
    );
    if (failures.length === 0) return;
    const where = this.cfg.file ? ` of ${this.cfg.file}` : '';
    const lines = failures.map(
      (f) =>
        `  - group ${f.group} (hosts ${f.hosts}): ` +
        `${f.err instanceof Error ? f.err.message : String(f.err)}`.replace(/\n/g, '\n    '),
    );
    // Unreachable wins over other causes (a wrong store password): it is what an operator
    // looks at first.
    const unavailable: ErrorCodeName = 'ERR_TDE_KMIP_UNAVAILABLE';
    const codes = failures.map((f) => (isTdeError(f.err) ? f.err.code : unavailable));
    const code = codes.includes(unavailable) ? unavailable : codes[0];
    const what = failures.length === 1 ? 'a KMIP group' : 'KMIP groups';
    throw new TdeError(
      code,
      `cannot start: ${what} in kmip_hosts${where} cannot be used, and ` +
        `every configured group must be (as in DSE):\n${lines.join('\n')}\n` +
        'Check that the KMIP servers are running and reachable from this host on those ports, ' +
        'and the key and trust stores of each group; or remove a group no table uses',
      { file: this.cfg.file },
      failures[0].err,
    );
  }

  /** The configuration in force (protected values decrypted when it came from a file). */
  get config(): TdeConfig | LoadedConfig {
    return this.cfg;
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  private live(what: string): void {
    if (this.closing) {
      throw new TdeError(
        'ERR_TDE_CLOSED',
        `${what}: this plugin was closed; open a new one with openPlugin()`,
      );
    }
  }

  /**
   * Runs a call, counted as in flight until it settles: close() waits for calls in flight, so
   * whatever they make (compressors, writers, KMIP connections) is there for it to close.
   */
  private run<T>(what: string, call: () => Promise<T>): Promise<T> {
    this.live(what);
    const p = call();
    this.inflight.add(p);
    p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  private keysInUse(): string[] {
    const out = this.keys.kmipProvider.keysInUse();
    for (const c of this.compressors) if (c.keyId?.startsWith('kmip://')) out.push(c.keyId);
    for (const w of this.writers) {
      const system = w instanceof PluginSegmentWriter || w instanceof PluginHintsWriter;
      if (system && w.keyAlias.startsWith('kmip://')) out.push(w.keyAlias);
    }
    return out;
  }

  private revoked(key: string, state: string): void {
    const stop = this.onKeyRevoked === 'stop';
    if (stop) {
      this.stopped.set(key, state);
      const url = parseKmipUrl(key);
      if (url) this.keys.kmipProvider.forgetChoice(url.group, url.id);
    }
    this.counters.keyRevoked({ key, state, action: stop ? 'stopped' : 'warned' });
  }

  private checkKey(key: string): void {
    const state = this.stopped.get(key);
    if (state === undefined) return;
    this.counters.encryptionRefused();
    const found = state === 'missing' ? 'gone from' : state;
    throw new TdeError(
      'ERR_TDE_KEY_REVOKED',
      `key ${key} is ${found} on its KMIP server and ` +
        'encrypts nothing more (onKeyRevoked: stop). Make a new compressor or ' +
        'writer (it chooses another active key, or creates one) and write this data again; data ' +
        'already encrypted with the key still decrypts while its bytes are cached',
      { key },
    );
  }

  private hooks(): WriterHooks {
    return {
      checkKey: (key) => this.checkKey(key),
      written: (e: SystemWriteEvent) => this.counters.systemWrite(e),
      ended: (w) => this.writers.delete(w),
    };
  }

  /**
   * The compressor for a table's CQL compression options, for example `{ class:
   * 'EncryptingLZ4Compressor', cipher_algorithm: 'AES/CBC/PKCS5Padding', secret_key_strength:
   * 128 }`. Close it when done; close() of the plugin closes any left open.
   */
  async compressorFor(
    tableOptions: Record<string, unknown>,
    options: CompressorForOptions = {},
  ): Promise<Compressor> {
    const { defaultChunkLength } = options;
    return this.run('compressorFor', () =>
      compressorForTable(tableOptions, { keys: this.keys, defaultChunkLength }),
    );
  }

  /** Opens an SSTable for reads by position (its key fetched and checked). Close it when done. */
  async openReader(id: SSTableId): Promise<SSTableReader> {
    return this.run('openReader', () => SSTableReader.open(id, { keys: this.keys }));
  }

  /**
   * A new SSTable written with the table's compression (a memtable flush, a compaction's
   * output). The writer owns its compressor: finish() or abort() closes it.
   */
  async createWriter(
    id: SSTableId,
    tableOptions: Record<string, unknown>,
    options: CreateWriterOptions = {},
  ): Promise<PluginSSTableWriter> {
    return this.run('createWriter', async () => {
      const params = parseTableCompression(tableOptions, options.defaultChunkLength ?? 65536);
      const compressor = params.enabled
        ? await this.compressorFor(tableOptions, options)
        : undefined;
      try {
        const w = await PluginSSTableWriter.create(id, compressor, params, options, this.hooks());
        this.writers.add(w);
        return w;
      } catch (err) {
        compressor?.close();
        throw err;
      }
    });
  }

  /** A new commit log segment, encrypted as system_info_encryption says. */
  async commitLogWriter(file: string, segmentId: bigint): Promise<PluginSegmentWriter> {
    return this.run('commitLogWriter', async () => {
      const [inner, alias] = await this.withSystemKey((encryption, blockLength) =>
        SegmentWriter.create({ file, id: segmentId, encryption, blockLength }),
      );
      const w = new PluginSegmentWriter(inner, alias, this.hooks());
      this.writers.add(w);
      return w;
    });
  }

  /** A new hints file, encrypted as system_info_encryption says. */
  async hintsWriter(
    names: HintsFileNames,
    descriptor: { hostId: string; timestamp: number },
  ): Promise<PluginHintsWriter> {
    return this.run('hintsWriter', async () => {
      const [inner, alias] = await this.withSystemKey((encryption, blockLength) =>
        HintsWriter.create(names, descriptor, encryption, blockLength),
      );
      const w = new PluginHintsWriter(inner, alias, this.hooks());
      this.writers.add(w);
      return w;
    });
  }

  /**
   * Runs `make` with system_info_encryption's current key (refused if the poll stopped it), and
   * wipes the key bytes after; returns what was made and the key's name.
   */
  private async withSystemKey<T>(
    make: (key: SegmentEncryption, blockLength: number) => Promise<T>,
  ): Promise<[T, string]> {
    const encryption = await systemInfoKey(this.cfg, this.keys);
    try {
      this.checkKey(encryption.keyAlias);
      const blockLength = (this.cfg.systemInfoEncryption as SystemInfoEncryption).chunkLength;
      return [await make(encryption, blockLength), encryption.keyAlias];
    } finally {
      (encryption.key as Buffer).fill(0);
    }
  }

  /**
   * Checks every live SSTable of a data directory against the keys at hand, acting on those
   * that cannot be read as `disk_failure_policy` says (see openDataDirectory).
   */
  async openDataDirectory(
    dataDir: string,
    options: Omit<OpenDataDirectoryOptions, 'config' | 'keys'> = {},
  ): Promise<OpenedDataDirectory> {
    return this.run('openDataDirectory', () =>
      openDataDirectory(dataDir, { ...options, config: this.cfg, keys: this.keys }),
    );
  }

  /**
   * Makes a new key for a table's options and has new data encrypted with it. KMIP: a new key is
   * created and activated in the group (and namespace), and the cached choice dropped, so the
   * next compressor uses it. Local keys: a new key file is made beside the old one, and the
   * options returned name it. Either way data written before keeps reading with the old key.
   */
  async rotateKey(
    tableOptions: Record<string, unknown>,
    options: { keyFile?: string } = {},
  ): Promise<RotatedKey> {
    return this.run('rotateKey', () => this.rotate(tableOptions, options));
  }

  private async rotate(
    tableOptions: Record<string, unknown>,
    options: { keyFile?: string },
  ): Promise<RotatedKey> {
    const params = parseTableCompression(tableOptions, 65536);
    const e = params.encryption;
    if (!e) {
      throw new TdeError(
        'ERR_TDE_BAD_OPTION',
        `class ${params.className ?? '(none)'} does not encrypt, so it has no key to rotate`,
      );
    }
    const choice = resolveCipher(e.cipherAlgorithm, e.strength, e.ivLength);
    const purpose = `${choice.name} ${choice.strength}`;
    if (e.keyProvider === KMIP_PROVIDER) {
      const group = e.kmipHost as string;
      const kmip = this.keys.kmipProvider;
      const id = await createKmipKey(kmip.client(group), choice, { namespace: e.keyNamespace });
      const before = kmip.forgetCurrent(group, e.keyNamespace, choice);
      // Choosing now picks the new key (the newest), announces the rotation and warms the cache.
      const chosen = await this.keys.keyFor(e, choice);
      chosen.bytes.fill(0);
      return {
        key: `kmip://${group}/${id}`,
        previous: before === undefined ? undefined : `kmip://${group}/${before}`,
        tableOptions: { ...tableOptions },
      };
    }

    const previous = e.systemKeyFile ?? 'system_key';
    const name = options.keyFile ?? nextKeyFileName(previous, this.cfg.systemKeyDirectory);
    createKeyFile(this.cfg.systemKeyDirectory, name, choice.name, choice.strength);
    this.counters.keyRotated({ source: 'local', key: name, previous, purpose });
    return { key: name, previous, tableOptions: { ...tableOptions, system_key_file: name } };
  }

  /** Runs the key-state poll now (it also runs every keyStatePollMillis). */
  async checkKeyStates(): Promise<void> {
    return this.run('checkKeyStates', () => this.poller.pollNow());
  }

  /** Every counter now: chunks and bytes, integrity failures, keys, KMIP requests and latency. */
  metrics(): MetricsSnapshot {
    return this.counters.snapshot();
  }

  /**
   * Shuts down: stops the key-state poll, aborts SSTable writers not finished, syncs and closes
   * commit log and hints writers, closes every compressor (their keys wiped from native memory),
   * closes the KMIP connections and wipes every cached key. Calling it again returns the same
   * promise. It rejects, after doing all of that, if a writer could not be closed cleanly.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const errors: unknown[] = [];
    await this.poller.stop();
    await Promise.allSettled([...this.inflight]);
    for (const w of [...this.writers]) await w.shutdown().catch((err) => errors.push(err));
    for (const c of [...this.compressors]) c.close();
    this.keys.close();
    if (errors.length > 0) {
      const first = errors[0];
      const messages = errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ');
      throw new TdeError(
        isTdeError(first) ? first.code : 'ERR_TDE_IO',
        'the plugin closed, but ' + `${errors.length} writer(s) did not close cleanly: ${messages}`,
        isTdeError(first) ? first.context : {},
        first,
      );
    }
  }
}

/** `NAME-2`, `NAME-3`, ... : the first such key file not yet in `dir`. */
function nextKeyFileName(current: string, dir: string): string {
  const stem = current.replace(/-\d+$/, '');
  for (let i = 2; ; i++) {
    const name = `${stem}-${i}`;
    if (!fs.existsSync(path.join(dir, name))) return name;
  }
}
