/**
 * The dse.yaml-style configuration: which directory holds local system keys, and (in later
 * parts) KMIP groups and encrypted values. Validated on load; every wrong key is reported at once,
 * each with the nearest valid name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as YAML from 'yaml';

import { fromSystem, TdeError } from '../errors';
import { nearest } from '../util/suggest';
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
  systemInfoEncryption?: Record<string, unknown>;
  /** Other dse.yaml settings present in the file, which sstable-tde does not use. */
  ignored: string[];
}

type Check = (value: unknown) => string | undefined;

const isString: Check = (v) => (typeof v === 'string' && v !== '' ? undefined : 'a non-empty string');
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
    if (expected) problems.push(`${key} must be ${expected}, not ${JSON.stringify(value)}`);
  }
  if (problems.length > 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} is not valid:\n  - ${problems.join('\n  - ')}`, {
      file,
    });
  }

  const base = file ? path.dirname(path.resolve(file)) : process.cwd();
  const kmipHosts = obj.kmip_hosts && typeof obj.kmip_hosts === 'object'
    ? parseKmipHosts(obj.kmip_hosts as Record<string, unknown>, base, problems)
    : new Map<string, KmipGroupSettings>();
  if (problems.length > 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${where} is not valid:\n  - ${problems.join('\n  - ')}`, { file });
  }
  const dir = (obj.system_key_directory as string | null) ?? DEFAULT_SYSTEM_KEY_DIRECTORY;
  return {
    file,
    systemKeyDirectory: path.resolve(base, dir),
    configEncryptionActive: (obj.config_encryption_active as boolean | null) ?? false,
    configEncryptionKeyName: (obj.config_encryption_key_name as string | null) ?? undefined,
    kmipHosts,
    systemInfoEncryption: (obj.system_info_encryption as Record<string, unknown> | null) ?? undefined,
    ignored,
  };
}

/** Reads and validates a YAML config file; with no file, the defaults. */
export function loadConfig(file?: string): TdeConfig {
  if (file === undefined) return configFromObject({});
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw fromSystem(err, file, 'read config file');
  }
  let parsed: unknown;
  try {
    // No pretty errors: their code frame would quote lines of the file, which may hold passwords.
    parsed = YAML.parse(text, { prettyErrors: false, maxAliasCount: 100 });
  } catch (err) {
    throw new TdeError('ERR_TDE_CONFIG', `config file ${file} is not valid YAML: ${(err as Error).message}`,
      { file }, err);
  }
  return configFromObject(parsed, file);
}
