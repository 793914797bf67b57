/**
 * The `kmip_hosts` section of dse.yaml: named groups of KMIP hosts with their TLS stores and
 * timings, validated setting by setting.
 *
 *   kmip_hosts:
 *     my_kmip_group:
 *       hosts: kmip1.example.com, kmip2.example.com:5697
 *       keystore_path: /etc/dse/conf/kmip_keystore.jks
 *       keystore_type: jks
 *       keystore_password: ...
 *       truststore_path: /etc/dse/conf/kmip_truststore.jks
 *       truststore_type: jks
 *       truststore_password: ...
 *       key_cache_millis: 300000
 *       timeout: 1000
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { TdeError } from '../errors';
import { KmipGroup } from '../kmip/client';
import { ProtocolVersion } from '../kmip/messages';
import { HostAddress } from '../kmip/transport';
import { quote } from '../util/redact';
import { didYouMean } from '../util/suggest';
import { loadStore } from './keystore';

export const DEFAULT_KMIP_PORT = 5696;
export const DEFAULT_KEY_CACHE_MILLIS = 300000;
export const DEFAULT_TIMEOUT_MILLIS = 1000;

export interface KmipGroupSettings {
  name: string;
  hosts: HostAddress[];
  keystorePath?: string;
  keystoreType?: string;
  keystorePassword?: string;
  truststorePath?: string;
  truststoreType?: string;
  truststorePassword?: string;
  keyCacheMillis: number;
  timeoutMs: number;
  protocol?: string;
  cipherSuites?: string[];
  /** sstable-tde extension: a KMIP version to use instead of negotiating one ("1.2", "2.0"). */
  kmipVersion?: ProtocolVersion;
}

const GROUP_KEYS = [
  'hosts',
  'keystore_path',
  'keystore_type',
  'keystore_password',
  'truststore_path',
  'truststore_type',
  'truststore_password',
  'key_cache_millis',
  'timeout',
  'protocol',
  'cipher_suites',
  'kmip_version',
];

/** `host`, `host:port`, `[v6]:port`; the port defaults to 5696. */
export function parseHosts(text: string): HostAddress[] {
  return text
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '')
    .map((h) => {
      const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(h);
      const plain = /^([^:\s]+)(?::(\d+))?$/.exec(h);
      const m = v6 ?? plain;
      if (!m) throw new Error(`"${h}" is not host or host:port`);
      const port = m[2] === undefined ? DEFAULT_KMIP_PORT : Number(m[2]);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new Error(`port ${m[2]} of "${h}" is not 1 to 65535`);
      return { host: m[1], port };
    });
}

/** Validates one group; every problem is appended to `problems` rather than thrown. */
function parseGroup(
  name: string,
  raw: unknown,
  base: string,
  problems: string[],
): KmipGroupSettings | undefined {
  const where = `kmip_hosts.${name}`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    problems.push(`${where} must be a map of settings (hosts, keystore_path, ...)`);
    return undefined;
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!GROUP_KEYS.includes(k))
      problems.push(`unknown setting "${where}.${k}"${didYouMean(k, GROUP_KEYS)}`);
  }
  const str = (k: string): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string' || typeof v === 'number') return String(v);
    problems.push(`${where}.${k} must be text`);
    return undefined;
  };
  const millis = (k: string, dflt: number, min: number): number => {
    const v = o[k];
    if (v === undefined || v === null) return dflt;
    const n =
      typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < min || n > 86400000) {
      problems.push(
        `${where}.${k} must be a whole number of milliseconds from ${min} to ` +
          `86400000, not ${quote(v)}`,
      );
      return dflt;
    }
    return n;
  };
  const file = (k: string): string | undefined => {
    const v = str(k);
    if (v === undefined) return undefined;
    const p = path.resolve(base, v);
    if (!fs.existsSync(p)) problems.push(`${where}.${k}: file ${p} does not exist`);
    return p;
  };

  let hosts: HostAddress[] = [];
  const hostsText = Array.isArray(o.hosts)
    ? o.hosts.every((h) => typeof h === 'string' || typeof h === 'number')
      ? o.hosts.join(',')
      : undefined
    : str('hosts');
  if (!hostsText) {
    problems.push(`${where}.hosts is required: a comma-separated list of host[:port]`);
  } else {
    try {
      hosts = parseHosts(hostsText);
      if (hosts.length === 0) problems.push(`${where}.hosts lists no host`);
    } catch (err) {
      problems.push(`${where}.hosts: ${(err as Error).message}`);
    }
  }

  let kmipVersion: ProtocolVersion | undefined;
  const kv = str('kmip_version');
  if (kv !== undefined) {
    const m = /^(1)\.([0-4])$|^(2)\.(0)$/.exec(kv.trim());
    if (!m) problems.push(`${where}.kmip_version must be one of 1.0 to 1.4 or 2.0, not "${kv}"`);
    else kmipVersion = { major: Number(m[1] ?? m[3]), minor: Number(m[2] ?? m[4]) };
  }

  const suites = str('cipher_suites');
  return {
    name,
    hosts,
    keystorePath: file('keystore_path'),
    keystoreType: str('keystore_type'),
    keystorePassword: str('keystore_password'),
    truststorePath: file('truststore_path'),
    truststoreType: str('truststore_type'),
    truststorePassword: str('truststore_password'),
    keyCacheMillis: millis('key_cache_millis', DEFAULT_KEY_CACHE_MILLIS, 0),
    timeoutMs: millis('timeout', DEFAULT_TIMEOUT_MILLIS, 1),
    protocol: str('protocol'),
    cipherSuites: suites
      ? suites
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : undefined,
    kmipVersion,
  };
}

export function parseKmipHosts(
  raw: Record<string, unknown>,
  base: string,
  problems: string[],
): Map<string, KmipGroupSettings> {
  const groups = new Map<string, KmipGroupSettings>();
  for (const [name, value] of Object.entries(raw)) {
    const g = parseGroup(name, value, base, problems);
    if (g) groups.set(name, g);
  }
  return groups;
}

/** Loads a group's stores and makes the settings a client can use. */
export function buildKmipGroup(s: KmipGroupSettings): KmipGroup {
  const trust = s.truststorePath
    ? loadStore(
        s.truststorePath,
        s.truststoreType,
        s.truststorePassword,
        'truststore',
        `kmip_hosts.${s.name}.truststore_path`,
      )
    : undefined;
  const keys = s.keystorePath
    ? loadStore(
        s.keystorePath,
        s.keystoreType,
        s.keystorePassword,
        'keystore',
        `kmip_hosts.${s.name}.keystore_path`,
      )
    : undefined;
  return {
    name: s.name,
    hosts: s.hosts,
    tls: {
      // Without a trust store, Node's own CA list applies: verification is never switched off.
      ca: trust?.certs,
      cert: keys?.certs,
      key: keys?.key,
      protocol: s.protocol,
      ciphers: s.cipherSuites,
    },
    timeoutMs: s.timeoutMs,
    keyCacheMillis: s.keyCacheMillis,
    version: s.kmipVersion,
  };
}

export function unknownGroup(name: string, groups: Map<string, unknown>, file?: string): TdeError {
  return new TdeError(
    'ERR_TDE_CONFIG',
    `KMIP group "${name}" is not defined in kmip_hosts` +
      `${file ? ` of ${file}` : ''}${didYouMean(name, [...groups.keys()])}` +
      (groups.size > 0 ? ` (defined: ${[...groups.keys()].join(', ')})` : ' (no group is defined)'),
  );
}
