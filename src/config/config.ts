/**
 * The dse.yaml-style configuration: the directory of local system keys, KMIP host groups, the
 * key for encrypted configuration values, and system resource encryption. Validated on load:
 * every wrong setting is reported at once, each with the nearest valid name. Secrets stay as
 * they are here; config/secure-values.ts decrypts protected values.
 */
import * as path from 'node:path';

import * as YAML from 'yaml';

import { TdeError } from '../errors';
import { readRegularFile } from '../util/files';
import { quote } from '../util/redact';
import { didYouMean, nearest } from '../util/suggest';
import { resolveCipher } from '../cipher/transformation';
import { KmipGroupSettings, parseKmipHosts } from './kmip-hosts';

/** DSE's default when dse.yaml does not set system_key_directory. */
export const DEFAULT_SYSTEM_KEY_DIRECTORY = '/etc/dse/conf';

export interface TdeConfig {
  /** The file the config came from, if any. */
  file?: string;
  /** Absolute directory of local system key files. */
  systemKeyDirectory: string;
  configEncryptionActive: boolean;
  configEncryptionKeyName?: string;
  /** KMIP host groups by name (kmip_hosts), validated. */
  kmipHosts: Map<string, KmipGroupSettings>;
  /** system_info_encryption, validated (commit log, hints, batchlog and paxos tables). */
  systemInfoEncryption?: SystemInfoEncryption;
  /** Other dse.yaml settings present in the file, which sstable-tde does not use. */
  ignored: string[];
  /** The whole parsed file, every setting as written (protected values still encrypted). */
  raw: Record<string, unknown>;
}

export interface SystemInfoEncryption {
  enabled: boolean;
  cipherAlgorithm: string;
  strength: number;
  keyProvider: 'LocalFileSystemKeyProviderFactory' | 'KmipKeyProviderFactory';
  kmipHost?: string;
  keyNamespace?: string;
  systemKeyFile?: string;
  /** Bytes per encrypted block. */
  chunkLength: number;
}

/** dse.yaml and cassandra.yaml are tens of KiB; a file far bigger is not one. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** DSE's default name of the key that encrypts configuration values. */
export const DEFAULT_CONFIG_KEY_NAME = 'system_key';

type Check = (value: unknown) => string | undefined;

const isString: Check = (v) =>
  typeof v === 'string' && v !== '' ? undefined : 'a non-empty string';
const isBoolean: Check = (v) => (typeof v === 'boolean' ? undefined : 'true or false');
const isMap: Check = (v) =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? undefined : 'a map of settings';

const KEYS: Record<string, Check> = {
  system_key_directory: isString,
  config_encryption_active: isBoolean,
  config_encryption_key_name: isString,
  kmip_hosts: isMap,
  system_info_encryption: isMap,
};

/** Validates an already-parsed config object. `file` is used in messages and to resolve paths. */
export function configFromObject(raw: unknown, file?: string): TdeConfig {
  const where = file ?? 'configuration';
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} must be a YAML map of settings`, { file });
  }
  const obj = raw as Record<string, unknown>;

  // A real dse.yaml holds many settings this tool has no use for; they are ignored. A name that
  // looks like a misspelling of one it does use is an error, since the setting would be lost.
  const problems: string[] = [];
  const ignored: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    const check = KEYS[key];
    if (!check) {
      const suggestion =
        nearest(key, Object.keys(KEYS)) ??
        Object.keys(KEYS).find((k) => key.length >= 8 && (k.startsWith(key) || key.startsWith(k)));
      if (suggestion) problems.push(`unknown setting "${key}" (did you mean "${suggestion}"?)`);
      else ignored.push(key);
      continue;
    }
    if (value === null) continue; // an empty YAML value means "use the default"
    const expected = check(value);
    if (expected) problems.push(`${key} must be ${expected}, not ${quote(value)}`);
  }
  if (problems.length > 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} is not valid:\n  - ${problems.join('\n  - ')}`, {
      file,
    });
  }

  const base = file ? path.dirname(path.resolve(file)) : process.cwd();
  const kmipHosts =
    obj.kmip_hosts && typeof obj.kmip_hosts === 'object'
      ? parseKmipHosts(obj.kmip_hosts as Record<string, unknown>, base, problems)
      : new Map<string, KmipGroupSettings>();
  if (problems.length > 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} is not valid:\n  - ${problems.join('\n  - ')}`, {
      file,
    });
  }
  const keyName = (obj.config_encryption_key_name as string | null) ?? undefined;
  if (keyName !== undefined) checkConfigKeyName(keyName, kmipHosts, problems);
  const systemInfo = obj.system_info_encryption
    ? parseSystemInfoEncryption(
        obj.system_info_encryption as Record<string, unknown>,
        kmipHosts,
        problems,
      )
    : undefined;
  if (problems.length > 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} is not valid:\n  - ${problems.join('\n  - ')}`, {
      file,
    });
  }
  const dir = (obj.system_key_directory as string | null) ?? DEFAULT_SYSTEM_KEY_DIRECTORY;
  return {
    file,
    systemKeyDirectory: path.resolve(base, dir),
    configEncryptionActive: (obj.config_encryption_active as boolean | null) ?? false,
    configEncryptionKeyName: keyName,
    kmipHosts,
    systemInfoEncryption: systemInfo,
    ignored,
    raw: obj,
  };
}

/** `kmip://GROUP/ID` parts, or undefined for a local key file name. */
export function parseKmipUrl(name: string): { group: string; id: string } | undefined {
  const m = /^kmip:\/\/([^/]+)\/(.+)$/.exec(name);
  return m ? { group: m[1], id: m[2] } : undefined;
}

function checkConfigKeyName(
  name: string,
  groups: Map<string, KmipGroupSettings>,
  problems: string[],
): void {
  if (name.startsWith('kmip:')) {
    const url = parseKmipUrl(name);
    if (!url)
      problems.push(
        `config_encryption_key_name ${quote(name)} is not of the form kmip://GROUP/KEY_ID`,
      );
    else if (!groups.has(url.group))
      problems.push(
        `config_encryption_key_name names KMIP group ${url.group}, which kmip_hosts does not ` +
          `define`,
      );
  } else if (name.includes('/') || name === '.' || name === '..') {
    problems.push(
      `config_encryption_key_name ${quote(name)} must be a key file name inside ` +
        `system_key_directory, or kmip://GROUP/KEY_ID`,
    );
  }
}

const SYSTEM_INFO_KEYS = [
  'enabled',
  'cipher_algorithm',
  'secret_key_strength',
  'key_provider',
  'kmip_host',
  'key_namespace',
  'system_key_file',
  'chunk_length_kb',
];

/**
 * A YAML scalar as text; undefined for a map or list (whose own conversion to text may throw:
 * `{toString: null}` is valid YAML).
 */
export function scalarText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return undefined;
}

function parseSystemInfoEncryption(
  o: Record<string, unknown>,
  groups: Map<string, KmipGroupSettings>,
  problems: string[],
): SystemInfoEncryption | undefined {
  const where = 'system_info_encryption';
  const text = (k: string, dflt?: string): string | undefined => {
    if (o[k] === undefined || o[k] === null) return dflt;
    const v = scalarText(o[k]);
    if (v === undefined) problems.push(`${where}.${k} must be text, not ${quote(o[k])}`);
    return v;
  };
  for (const k of Object.keys(o)) {
    if (!SYSTEM_INFO_KEYS.includes(k))
      problems.push(`unknown setting "${where}.${k}"${didYouMean(k, SYSTEM_INFO_KEYS)}`);
  }
  const enabled = o.enabled ?? false;
  if (typeof enabled !== 'boolean') problems.push(`${where}.enabled must be true or false`);
  const provider = (text('key_provider', 'LocalFileSystemKeyProviderFactory') ?? '')
    .split('.')
    .pop();
  if (provider !== 'LocalFileSystemKeyProviderFactory' && provider !== 'KmipKeyProviderFactory') {
    problems.push(
      `${where}.key_provider must be LocalFileSystemKeyProviderFactory or KmipKeyProviderFactory`,
    );
  }
  let choice: { name: string; strength: number } | undefined;
  try {
    choice = resolveCipher(
      text('cipher_algorithm', 'AES/CBC/PKCS5Padding') ?? '',
      text('secret_key_strength', '128') ?? '',
    );
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
  }
  const kb = o.chunk_length_kb ?? 64;
  if (typeof kb !== 'number' || !Number.isInteger(kb) || kb < 1 || kb > 1024) {
    problems.push(
      `${where}.chunk_length_kb must be a whole number of KiB from 1 to 1024, ` +
        `not ${quote(kb)}`,
    );
  }
  const kmipHost = text('kmip_host');
  if (provider === 'KmipKeyProviderFactory') {
    if (!kmipHost) problems.push(`${where}.kmip_host is required with KmipKeyProviderFactory`);
    else if (!groups.has(kmipHost))
      problems.push(
        `${where}.kmip_host names KMIP group ${kmipHost}, which kmip_hosts does not define`,
      );
  }
  if (
    !choice ||
    (provider !== 'LocalFileSystemKeyProviderFactory' && provider !== 'KmipKeyProviderFactory')
  )
    return undefined;
  return {
    enabled: enabled === true,
    cipherAlgorithm: choice.name,
    strength: choice.strength,
    keyProvider: provider,
    kmipHost,
    keyNamespace: text('key_namespace'),
    systemKeyFile: text('system_key_file'),
    chunkLength: (typeof kb === 'number' ? kb : 64) * 1024,
  };
}

/** Reads and validates a YAML config file (no secrets decrypted); with no file, the defaults. */
export function readConfig(file?: string): TdeConfig {
  if (file === undefined) return configFromObject({});
  const text = readRegularFile(file, MAX_CONFIG_BYTES, 'ERR_TDE_CONFIG', 'config file').toString(
    'utf8',
  );
  return configFromObject(parseYaml(text, file, 'config file'), file);
}

const QUOTE_IT = 'put such a value (a password?) in quotes';

/** What a YAML error means, from its code alone: never from its text, which may quote values. */
function yamlProblem(err: { code?: unknown }): string {
  const code = typeof err.code === 'string' ? err.code : undefined;
  if (code === 'ANCHOR_OR_ALIAS') {
    return `a value that starts with & or * is read as a YAML anchor or alias; ${QUOTE_IT}`;
  }
  if (code === 'TAG_RESOLVE_FAILED')
    return `a value that starts with ! is read as a tag; ${QUOTE_IT}`;
  if (code === 'BAD_DIRECTIVE')
    return `a line that starts with % is read as a directive; ${QUOTE_IT}`;
  if (code === 'DUPLICATE_KEY') return 'a key appears twice in one mapping';
  return (
    `a YAML syntax error (${code ?? 'unknown'}): check the indentation, and quote values that ` +
    'hold ": ", " #", or start with one of * ! & % @ ` | > { [ \' "'
  );
}

/** Parses a YAML file's text; a syntax error is ERR_TDE_CONFIG naming the file. */
export function parseYaml(text: string, file: string, what: string): unknown {
  try {
    // No pretty errors: their code frame would quote lines of the file, which may hold
    // passwords. Warnings are not logged: the library writes nothing to the console.
    const doc = YAML.parseDocument(text, { prettyErrors: false, logLevel: 'silent' });
    const unresolvedTag = doc.warnings.find((w) => w.code === 'TAG_RESOLVE_FAILED');
    if (doc.errors.length > 0) throw doc.errors[0];
    if (unresolvedTag) throw unresolvedTag;
    // Anchors and aliases have no use in these files, but a password that starts with & or *
    // is read as one: the value would silently be empty, or another value.
    YAML.visit(doc, (_key, node) => {
      const anchored = YAML.isNode(node) && node.anchor !== undefined;
      if (anchored || YAML.isAlias(node)) {
        throw Object.assign(new Error('anchor or alias'), {
          code: 'ANCHOR_OR_ALIAS',
          pos: (node as { range?: number[] }).range,
        });
      }
    });
    return doc.toJS();
  } catch (err) {
    // The library's message can quote the file (an alias or tag name is whatever follows * or !,
    // which may be a password), so only its code is used, with what it most often means.
    const message = yamlProblem(err as { code?: unknown });
    // Where, as line and column (the library's own position is an offset): no text is quoted.
    const pos = (err as { pos?: unknown }).pos;
    let where = '';
    if (Array.isArray(pos) && typeof pos[0] === 'number') {
      const before = text.slice(0, pos[0]);
      const line = before.split('\n').length;
      where = ` at line ${line}, column ${pos[0] - before.lastIndexOf('\n')}`;
    }
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `${what} ${file} is not valid YAML${where}: ${message}`,
      { file },
      err,
    );
  }
}
