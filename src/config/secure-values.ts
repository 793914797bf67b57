/**
 * Encrypted configuration values, as DSE writes them: base64 of `[IV if the mode has one]
 * [ciphertext]` under the configured system key (`config_encryption_key_name`: a key file in
 * system_key_directory, default `system_key`, or `kmip://GROUP/KEY_ID`).
 *
 * `loadConfig` gives a storage process its configuration with the protected properties
 * decrypted. With `config_encryption_active: true`, a protected property that does not decrypt
 * is taken to be plain text, and start-up fails listing every such property. The KMIP key and
 * trust store passwords stay plain: they are needed to reach the key that would decrypt them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ChunkCipher, createChunkCipher } from '../cipher/chunk-cipher';
import { TdeError } from '../errors';
import { readKeyFile } from '../keys/key-file';
import { kmipKeyCipherOf } from '../keys/kmip-admin';
import { keyStateOf, usableForEncryption } from '../keys/kmip-provider';
import { KeyProviders } from '../keys/provider';
import { KmipError } from '../kmip/client';
import { readRegularFile } from '../util/files';
import {
  DEFAULT_CONFIG_KEY_NAME,
  MAX_CONFIG_BYTES,
  parseKmipUrl,
  parseYaml,
  readConfig,
  TdeConfig,
} from './config';

/** Properties DSE protects, by file. */
export const PROTECTED_DSE = ['ldap_options.search_password', 'ldap_options.truststore_password'];
export const PROTECTED_CASSANDRA = [
  'server_encryption_options.keystore_password',
  'server_encryption_options.truststore_password',
  'client_encryption_options.keystore_password',
  'client_encryption_options.truststore_password',
];

export interface ConfigKey {
  /** The key's name: a key file name or kmip://GROUP/ID. */
  name: string;
  cipher: ChunkCipher;
}

/**
 * Opens the key that encrypts configuration values. The caller destroys `cipher` when done.
 * With `encrypting`, a KMIP key that may no longer encrypt (revoked, deactivated, or past its
 * Protect Stop Date) is refused: it still decrypts the values it encrypted, but takes no new one.
 */
export async function configKey(
  config: TdeConfig,
  keys: KeyProviders,
  options: { encrypting?: boolean } = {},
): Promise<ConfigKey> {
  const name = config.configEncryptionKeyName ?? DEFAULT_CONFIG_KEY_NAME;
  const url = parseKmipUrl(name);
  if (url) {
    try {
      return await kmipConfigKey(name, url, keys, options.encrypting === true);
    } catch (err) {
      const reason = err instanceof KmipError ? err.reason : undefined;
      if (reason === 'ItemNotFound' || reason === 'PermissionDenied') {
        throw new TdeError(
          'ERR_TDE_KEY_NOT_FOUND',
          `config_encryption_key_name ${name} cannot be fetched (${reason}): if the key was ` +
            'destroyed, values encrypted with it can no longer be read and must be set again in ' +
            'plain text and encrypted under a new key; otherwise check that this client (its ' +
            'certificate) owns the key',
          { key: name },
          err,
        );
      }
      throw err;
    }
  }
  const [entry] = readKeyFile(path.join(config.systemKeyDirectory, name));
  try {
    return {
      name,
      cipher: createChunkCipher({
        cipher_algorithm: entry.transformation,
        secret_key_strength: entry.strength,
        key: entry.key,
      }),
    };
  } finally {
    entry.key.fill(0);
  }
}

async function kmipConfigKey(
  name: string,
  url: { group: string; id: string },
  keys: KeyProviders,
  encrypting: boolean,
): Promise<ConfigKey> {
  const client = keys.kmipProvider.client(url.group);
  const attrs = await client.getAttributes(url.id);
  const choice = kmipKeyCipherOf(url.id, attrs);
  if (encrypting) {
    const state = keyStateOf(url.id, attrs);
    const now = BigInt(Math.floor(Date.now() / 1000));
    // Any namespace: the key is named outright, not chosen from a namespace.
    if (!usableForEncryption({ ...state, objectGroup: undefined }, now, undefined)) {
      const why =
        state.state !== 'Active'
          ? `is ${state.state ?? 'in an unknown state'}`
          : 'is past its Protect Stop Date or Deactivation Date';
      throw new TdeError(
        'ERR_TDE_KEY_REVOKED',
        `config_encryption_key_name ${name} ${why}, so it encrypts nothing new (values it ` +
          `encrypted still decrypt): make a new key ("sstable-tde createsystemkey ${choice.name} ` +
          `${choice.strength} -k ${url.group}"), name it in config_encryption_key_name, ` +
          'and encrypt the values again',
        { key: name },
      );
    }
  }
  const bytes = await client.getKey(url.id);
  try {
    return {
      name,
      cipher: createChunkCipher({
        cipher_algorithm: choice.name,
        secret_key_strength: choice.strength,
        key: bytes,
      }),
    };
  } finally {
    bytes.fill(0);
  }
}

export function encryptValue(cipher: ChunkCipher, value: string): string {
  return cipher.encryptSync(Buffer.from(value, 'utf8')).toString('base64');
}

/** The plain text of an encrypted value, or undefined when `value` is not one (plain text). */
export function decryptValue(cipher: ChunkCipher, value: string): string | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value) || value.length % 4 !== 0) return undefined;
  try {
    const plain = cipher.decryptSync(Buffer.from(value, 'base64'));
    return new TextDecoder('utf-8', { fatal: true }).decode(plain);
  } catch {
    return undefined;
  }
}

function getPath(tree: Record<string, unknown>, dotted: string): unknown {
  let at: unknown = tree;
  for (const part of dotted.split('.')) {
    if (at === null || typeof at !== 'object') return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}

function setPath(tree: Record<string, unknown>, dotted: string, value: string): void {
  const parts = dotted.split('.');
  let at = tree;
  for (const part of parts.slice(0, -1)) at = at[part] as Record<string, unknown>;
  at[parts[parts.length - 1]] = value;
}

export interface LoadedConfig extends TdeConfig {
  /** dse.yaml as a tree, protected properties decrypted. */
  values: Record<string, unknown>;
  /** cassandra.yaml as a tree, protected properties decrypted, when one was found. */
  cassandra?: Record<string, unknown>;
  cassandraFile?: string;
}

export interface LoadConfigOptions {
  /** cassandra.yaml to decrypt as well; by default the one beside the dse.yaml, if any. */
  cassandraYaml?: string;
  /** Key providers to use (a caller that has some open); otherwise made and closed here. */
  keys?: KeyProviders;
}

/**
 * Reads dse.yaml (and cassandra.yaml beside it) and decrypts the protected properties. Fails,
 * listing them all, when encryption is active and some are in plain text.
 */
export async function loadConfig(
  file: string,
  options: LoadConfigOptions = {},
): Promise<LoadedConfig> {
  const config = readConfig(file);
  const values = structuredClone(config.raw);
  const cassandraFile =
    options.cassandraYaml ??
    (fs.existsSync(path.join(path.dirname(file), 'cassandra.yaml'))
      ? path.join(path.dirname(file), 'cassandra.yaml')
      : undefined);
  let cassandra: Record<string, unknown> | undefined;
  if (cassandraFile) {
    const bytes = readRegularFile(
      cassandraFile,
      MAX_CONFIG_BYTES,
      'ERR_TDE_CONFIG',
      'cassandra.yaml',
    );
    const text = bytes.toString('utf8');
    const parsed = parseYaml(text, cassandraFile, 'cassandra.yaml') ?? {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new TdeError('ERR_TDE_CONFIG', `${cassandraFile} must be a YAML map of settings`, {
        file: cassandraFile,
      });
    }
    cassandra = parsed as Record<string, unknown>;
  }
  if (!config.configEncryptionActive) return { ...config, values, cassandra, cassandraFile };

  const keys = options.keys ?? new KeyProviders(config);
  let key: ConfigKey | undefined;
  try {
    key = await configKey(config, keys);
    const plain: string[] = [];
    const decryptIn = (
      tree: Record<string, unknown> | undefined,
      paths: string[],
      where: string,
    ) => {
      if (!tree) return;
      for (const p of paths) {
        const v = getPath(tree, p);
        if (v === undefined || v === null) continue;
        const clear =
          typeof v === 'string' ? decryptValue((key as ConfigKey).cipher, v) : undefined;
        if (clear === undefined) plain.push(`${where}: ${p}`);
        else setPath(tree, p, clear);
      }
    };
    decryptIn(values, PROTECTED_DSE, file);
    decryptIn(cassandra, PROTECTED_CASSANDRA, cassandraFile ?? 'cassandra.yaml');
    if (plain.length > 0) {
      throw new TdeError(
        'ERR_TDE_CONFIG',
        `config_encryption_active is true, but these properties are not ` +
          `encrypted with ${key.name} (or were encrypted with another key):\n  - ` +
          `${plain.join('\n  - ')}\n` +
          'encrypt each value with "sstable-tde encryptconfigvalue" and put the output in its ' +
          'place',
        { file },
      );
    }
    return { ...config, values, cassandra, cassandraFile };
  } finally {
    key?.cipher.destroy();
    if (!options.keys) keys.close();
  }
}

/**
 * Calls `onChange` with the new configuration whenever the file changes (checked every
 * `intervalMs`), as dsetool's changes are picked up without a restart. A file that no longer
 * validates is passed on as an error; the previous configuration stays in force. The watch never
 * keeps the process alive; `close()` stops it.
 */
export function watchConfig(
  file: string,
  onChange: (config: TdeConfig | undefined, error?: unknown) => void,
  intervalMs = 1000,
): { close(): void } {
  const listener = (curr: fs.Stats, prev: fs.Stats) => {
    if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size) return;
    try {
      onChange(readConfig(file));
    } catch (err) {
      onChange(undefined, err);
    }
  };
  fs.watchFile(file, { interval: intervalMs, persistent: false }, listener);
  return { close: () => fs.unwatchFile(file, listener) };
}
