/**
 * SSTable names and the format details that depend on the version: component file names are
 * `<version>-<generation>-<format>-<Component>` from la (Cassandra 2.2) on, for example
 * `nb-1-big-Data.db` or `da-3-bti-Partitions.db`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ChecksumType } from '../checksum';
import { fromSystem, TdeError } from '../errors';

export type SSTableFormat = 'big' | 'bti';

/** One SSTable: a directory and the name prefix its components share. */
export interface SSTableId {
  dir: string;
  /** Two-letter format version, for example `nb`. */
  version: string;
  /** Generation: a decimal number, or (Cassandra 5.0 option) a time-based identifier. */
  generation: string;
  format: SSTableFormat;
}

/** An SSTable found on disk, with the components whose files exist. */
export interface SSTableFiles extends SSTableId {
  components: string[];
}

const NAME = /^([a-z]{2})-([0-9a-z_]+)-(big|bti)-(.+)$/;
/** ka and older put keyspace and table into the name: `ks-table-ka-1-Data.db`. */
const LEGACY_NAME = /^(.+)-(.+)-([a-k][a-z])-(\d+)-(.+)$/;

export interface ParsedName extends Omit<SSTableId, 'dir'> {
  component: string;
}

export function parseComponentName(name: string): ParsedName | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  return { version: m[1], generation: m[2], format: m[3] as SSTableFormat, component: m[4] };
}

/** True for component names of SSTable versions older than la, which this package cannot read. */
export function isLegacyName(name: string): boolean {
  return !NAME.test(name) && LEGACY_NAME.test(name) && name.endsWith('-Data.db');
}

/** Refuses an id whose parts could make a file name outside its directory, or no SSTable name. */
export function checkId(id: SSTableId): void {
  if (
    typeof id !== 'object' ||
    id === null ||
    typeof id.dir !== 'string' ||
    !/^[a-z]{2}$/.test(String(id.version)) ||
    !/^[0-9a-z_]{1,64}$/.test(String(id.generation)) ||
    (id.format !== 'big' && id.format !== 'bti')
  ) {
    throw new TdeError(
      'ERR_TDE_BAD_SSTABLE_NAME',
      `not an SSTable id: version must be two letters (nb), ` +
        `generation digits, letters or _ (up to 64), format big or bti; got ${JSON.stringify({
          version: id?.version,
          generation: id?.generation,
          format: id?.format,
        })}`,
    );
  }
}

/** Cassandra keeps a numeric generation in a Java int: a larger one names an SSTable it skips. */
export const MAX_GENERATION = 2147483647n;

export function prefixOf(id: Omit<SSTableId, 'dir'>): string {
  return `${id.version}-${id.generation}-${id.format}`;
}

export function componentPath(id: SSTableId, component: string): string {
  return path.join(id.dir, `${prefixOf(id)}-${component}`);
}

/** Short name for messages: `keyspace/table/nb-1-big`. */
export function displayName(id: SSTableId): string {
  const table = path.basename(id.dir);
  const keyspace = path.basename(path.dirname(id.dir));
  return printable(`${keyspace}/${table}/${prefixOf(id)}`);
}

/**
 * A name with its control characters escaped (\n, \x1b): Cassandra never makes such names, but
 * a directory that has one must not break a line of output or send the terminal a command.
 */
export function printable(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f]/g, (c) => {
    const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
    return named[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

export interface VersionFeatures {
  /** Checksum of compressed chunks, CRC.db slices and the digest. */
  checksum: ChecksumType;
  /** CompressionInfo.db carries maxCompressedLength (na and later, and every BTI version). */
  hasMaxCompressedLength: boolean;
  /** The digest component Cassandra writes for this version. */
  digestComponent: string;
}

export function featuresOf(id: Pick<SSTableId, 'version' | 'format'>): VersionFeatures {
  if (id.format === 'bti') {
    return { checksum: 'crc32', hasMaxCompressedLength: true, digestComponent: 'Digest.crc32' };
  }
  if (id.version < 'la') {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      `SSTable version ${id.version} (Cassandra 2.1 or older) is not supported; upgrade it with ` +
        "Cassandra's own nodetool upgradesstables first",
    );
  }
  if (id.version < 'ma') {
    return {
      checksum: 'adler32',
      hasMaxCompressedLength: false,
      digestComponent: 'Digest.adler32',
    };
  }
  return {
    checksum: 'crc32',
    hasMaxCompressedLength: id.version >= 'na',
    digestComponent: 'Digest.crc32',
  };
}

/**
 * Lists the SSTables in one table directory, from the files present. Files that are not SSTable
 * components are ignored; pre-la names are returned in `legacy` so callers can report them.
 */
export function scanTableDirectory(dir: string): { sstables: SSTableFiles[]; legacy: string[] } {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw fromSystem(err, dir, 'list directory');
  }
  const byPrefix = new Map<string, SSTableFiles>();
  const legacy: string[] = [];
  for (const name of names.sort()) {
    const parsed = parseComponentName(name);
    if (!parsed) {
      if (isLegacyName(name)) legacy.push(name);
      continue;
    }
    const key = prefixOf(parsed);
    let entry = byPrefix.get(key);
    if (!entry) {
      entry = {
        dir,
        version: parsed.version,
        generation: parsed.generation,
        format: parsed.format,
        components: [],
      };
      byPrefix.set(key, entry);
    }
    entry.components.push(parsed.component);
  }
  const sstables = [...byPrefix.values()].sort((a, b) =>
    compareGenerations(a.generation, b.generation),
  );
  return { sstables, legacy };
}

/** Orders generations numerically where they are numbers, else as text. */
export function compareGenerations(a: string, b: string): number {
  const na = /^\d+$/.test(a);
  const nb = /^\d+$/.test(b);
  if (na && nb) return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
  if (na !== nb) return na ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}
