/**
 * Finding tables and their live SSTables in a Cassandra data directory laid out as
 * `KEYSPACE/TABLE/` or `KEYSPACE/TABLE-<table id>/`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { fromSystem, TdeError } from '../errors';
import { debrisPrefixes, readTxns } from '../rewrite/txn';
import { isDirectory } from '../util/files';
import { prefixOf, printable, scanTableDirectory, SSTableFiles } from './descriptor';

export interface TableDir {
  keyspace: string;
  table: string;
  dir: string;
}

/** Subdirectories of a table directory that hold copies, not live data. */
const NOT_TABLES = new Set(['snapshots', 'backups']);

/** Subdirectories, following symbolic links (operators move tables to other disks with them). */
function subdirectories(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    throw fromSystem(err, dir, 'list directory');
  }
  const isDir = (e: fs.Dirent) => {
    if (e.isDirectory()) return true;
    if (!e.isSymbolicLink()) return false;
    try {
      return fs.statSync(path.join(dir, e.name)).isDirectory();
    } catch {
      return false; // a dangling link leads nowhere
    }
  };
  return entries
    .filter((e) => !e.name.startsWith('.') && !NOT_TABLES.has(e.name) && isDir(e))
    .map((e) => e.name)
    .sort();
}

/** `table-0123...` (32 hex digits of table id) or plain `table`. */
export function tableNameOf(dirName: string): string {
  const m = /^(.+)-[0-9a-f]{32}$/.exec(dirName);
  return m ? m[1] : dirName;
}

/**
 * The table directories under `dataDir`, optionally only those of one keyspace and some tables.
 * Naming a keyspace or table that is not there is an error that lists what is.
 */
export function findTables(dataDir: string, keyspace?: string, tables: string[] = []): TableDir[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(dataDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TdeError(
        'ERR_TDE_IO',
        `cannot open data directory ${dataDir}: it does not exist; give the directory that ` +
          "holds the keyspace directories (Cassandra's data_file_directories entry)",
        { file: dataDir },
        err,
      );
    }
    throw fromSystem(err, dataDir, 'open data directory');
  }
  if (!st.isDirectory()) {
    throw new TdeError('ERR_TDE_DATA_DIR', `${dataDir} is not a directory`, { file: dataDir });
  }

  const keyspaces = subdirectories(dataDir);
  if (keyspace !== undefined && !keyspaces.includes(keyspace)) {
    throw new TdeError(
      'ERR_TDE_DATA_DIR',
      `keyspace ${keyspace} is not in ${dataDir} (found: ` + `${keyspaces.join(', ') || 'none'})`,
      { file: dataDir },
    );
  }

  const out: TableDir[] = [];
  for (const ks of keyspace !== undefined ? [keyspace] : keyspaces) {
    for (const name of subdirectories(path.join(dataDir, ks))) {
      // Names as shown (a control character in a directory name escaped); `dir` as on disk.
      out.push({
        keyspace: printable(ks),
        table: printable(tableNameOf(name)),
        dir: path.join(dataDir, ks, name),
      });
    }
  }
  if (tables.length > 0) {
    const missing = tables.filter((t) => !out.some((o) => o.table === t));
    if (missing.length > 0) {
      throw new TdeError(
        'ERR_TDE_DATA_DIR',
        `table ${missing.join(', ')} not found in keyspace ` +
          `${keyspace} of ${dataDir} (found: ${out.map((o) => o.table).join(', ') || 'none'})`,
        { file: dataDir },
      );
    }
    return out.filter((o) => tables.includes(o.table));
  }
  return out;
}

export interface LiveListing {
  sstables: SSTableFiles[];
  /** Pre-la SSTables (Data.db file names), which this package cannot read. */
  legacy: string[];
  /** Transaction logs of interrupted rewrites. */
  interrupted: string[];
  /**
   * Those of them that are damaged, and why (see TxnState.damage): their SSTables all count as
   * live, and no run settles them.
   */
  damagedTxns: { file: string; damage: string }[];
  /**
   * Cassandra's own transaction logs (`<format>_txn_<operation>_<id>.log`): an interrupted
   * flush or compaction that Cassandra finishes or undoes when it next starts. Until then which
   * SSTables are live is Cassandra's to decide, not ours.
   */
  cassandraTxns: string[];
  /** Non-empty snapshots/ and backups/ subdirectories, which hold copies as they were. */
  copies: string[];
}

/**
 * A table directory's `.<index>` subdirectories, where Cassandra keeps legacy secondary-index
 * SSTables (written with the table's compression, and so under its key). None when the
 * directory cannot be read: its own listing reports that.
 */
export function indexDirectories(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.startsWith('.'))
    .map((n) => path.join(dir, n))
    .filter(isDirectory);
}

/** The SSTables of a table directory that are live: debris of interrupted rewrites is left out. */
export function liveSSTables(dir: string): LiveListing {
  const { sstables, legacy } = scanTableDirectory(dir);
  const debris = debrisPrefixes(dir);
  const names = fs.readdirSync(dir);
  const txns = readTxns(dir);
  const copies = ['snapshots', 'backups']
    .map((d) => path.join(dir, d))
    .filter((d) => {
      try {
        return fs.readdirSync(d).length > 0;
      } catch {
        return false;
      }
    });
  return {
    sstables: sstables.filter((s) => !debris.has(prefixOf(s))),
    legacy,
    interrupted: txns.map((t) => t.file),
    damagedTxns: txns.flatMap((t) => (t.damage ? [{ file: t.file, damage: t.damage }] : [])),
    cassandraTxns: names
      .filter((n) => /^[a-z]{2}_txn_.+\.log$/.test(n))
      .map((n) => path.join(dir, n)),
    copies,
  };
}
