/**
 * Key providers: where the key for a table's encryption settings comes from. The local provider
 * reads DSE system key files from the configured system_key_directory; KMIP comes later.
 */
import * as path from 'node:path';

import { CipherChoice } from '../cipher/transformation';
import { EncryptionSettings, KMIP_PROVIDER } from '../compression/options';
import { TdeConfig } from '../config/config';
import { TdeError } from '../errors';
import { keyCheckValue } from './key-check';
import { KmipKeyProvider, KmipProviderOptions } from './kmip-provider';
import { SecretBytes } from './secret-bytes';
import { KeyFileEntry, readKeyFile } from './key-file';
import { TdeObserver } from '../metrics/observer';

/** Key bytes for one use. The receiver wipes `bytes` once the cipher holds them. */
export interface ResolvedKey {
  bytes: Buffer;
  keyCheckValue: string;
  /** A name for messages: the key file, or a KMIP id. */
  id: string;
  /** Options to record in CompressionInfo.db so a read finds this very key (KMIP: its id). */
  record?: Record<string, string>;
}

export interface KeyProvider {
  keyFor(settings: EncryptionSettings, choice: CipherChoice): Promise<ResolvedKey>;
  /** Wipes anything cached. */
  close(): void;
  /**
   * Told of key lookups and fetches; compressors made with this provider report their work to
   * it as well (see metrics/observer.ts).
   */
  readonly observer?: TdeObserver;
}

/** True for transformations whose chunks are authenticated (AES/GCM). */
export function isAuthenticated(transformation: string): boolean {
  return /\/GCM\//i.test(transformation);
}

/** Keys from DSE-style system key files. */
/** A key file line as the provider keeps it: the key hidden, its check value worked out once. */
interface CachedEntry extends Omit<KeyFileEntry, 'key'> {
  key: SecretBytes;
  keyCheckValue: string;
}

export class LocalFileSystemKeyProvider implements KeyProvider {
  private readonly cache = new Map<string, CachedEntry[]>();

  constructor(
    readonly directory: string,
    readonly observer?: TdeObserver,
  ) {}

  async keyFor(settings: EncryptionSettings, choice: CipherChoice): Promise<ResolvedKey> {
    const name = settings.systemKeyFile ?? 'system_key';
    const file = path.join(this.directory, name);
    let entries = this.cache.get(file);
    this.observer?.keyLookup?.({ source: 'local', key: name, hit: entries !== undefined });
    if (!entries) {
      const started = performance.now();
      try {
        entries = readKeyFile(file, { cipher: choice.name, strength: choice.strength }).map((e) => {
          const kept = { ...e, key: new SecretBytes(e.key), keyCheckValue: keyCheckValue(e.key) };
          e.key.fill(0);
          return kept;
        });
      } catch (err) {
        const code = err instanceof TdeError ? err.code : 'ERR_TDE_IO';
        this.observer?.keyFetchFailed?.({ source: 'local', key: name, code });
        throw err;
      }
      this.cache.set(file, entries);
      this.observer?.keyFetched?.({ source: 'local', key: name, ms: performance.now() - started });
    }

    // A key serves any mode of its algorithm, except that keys for authenticated chunks (GCM)
    // serve only GCM: otherwise an SSTable's metadata could be edited to read its chunks as
    // unauthenticated CTR under the same key, and altered without detection.
    const fits = entries.filter(
      (e) => e.algorithm === choice.algorithm && e.strength === choice.strength,
    );
    const sameKind = fits.filter(
      (e) => isAuthenticated(e.transformation) === (choice.mode === 'GCM'),
    );
    const candidates = [
      ...sameKind.filter((e) => e.transformation === choice.name),
      ...sameKind.filter((e) => e.transformation !== choice.name),
    ];
    // With a recorded key check value, the line that matches it (a file may hold several).
    const entry =
      (settings.keyCheckValue !== undefined
        ? candidates.find((e) => e.keyCheckValue === settings.keyCheckValue)
        : undefined) ?? candidates[0];
    if (!entry) {
      const held = entries.map((e) => `${e.transformation}:${e.strength}`).join(', ');
      const kindNote =
        fits.length > 0
          ? ` fit for ` +
            `${choice.mode === 'GCM' ? 'authenticated (GCM)' : 'unauthenticated'} chunks (keys ` +
            `made for ` +
            'AES/GCM/NoPadding serve GCM only, and GCM needs such a key, so that an SSTable ' +
            'cannot be downgraded to an unauthenticated mode under the same key)'
          : '';
      throw new TdeError(
        'ERR_TDE_KEY_NOT_FOUND',
        `system key file ${file} has no ${choice.algorithm} ${choice.strength}-bit ` +
          `key${kindNote} (it holds ${held}); create one with "sstable-tde createsystemkey ` +
          `${choice.name} ${choice.strength} ` +
          `NEW_NAME -d ${this.directory}" and name NEW_NAME in the table's system_key_file`,
        { file, key: name },
      );
    }
    return { bytes: entry.key.copy(), keyCheckValue: entry.keyCheckValue, id: name };
  }

  close(): void {
    for (const entries of this.cache.values()) for (const e of entries) e.key.wipe();
    this.cache.clear();
  }
}

/** Dispatches to the provider a table's settings name. */
export class KeyProviders implements KeyProvider {
  private readonly local: LocalFileSystemKeyProvider;
  private readonly kmip: KmipKeyProvider;

  /** The observer given in the options, told of every key lookup, fetch and cipher batch. */
  readonly observer?: TdeObserver;

  constructor(config: TdeConfig, options: KmipProviderOptions = {}) {
    this.observer = options.observer;
    this.local = new LocalFileSystemKeyProvider(config.systemKeyDirectory, options.observer);
    this.kmip = new KmipKeyProvider(config.kmipHosts, options, config.file);
  }

  async keyFor(
    settings: EncryptionSettings,
    choice: CipherChoice,
    options: { create?: boolean } = {},
  ): Promise<ResolvedKey> {
    if (settings.keyProvider === KMIP_PROVIDER) return this.kmip.keyFor(settings, choice, options);
    return this.local.keyFor(settings, choice);
  }

  /** The KMIP provider, for commands that manage keys directly. */
  get kmipProvider(): KmipKeyProvider {
    return this.kmip;
  }

  close(): void {
    this.local.close();
    this.kmip.close();
  }
}
