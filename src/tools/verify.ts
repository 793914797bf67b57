/**
 * `verify`: reads every chunk of every live SSTable, checks chunk checksums and the digest,
 * decrypts and decompresses, and reports each fault with its SSTable, chunk and offset.
 */
import { TdeConfig } from '../config/config';
import { isTdeError, TdeError } from '../errors';
import { KeyProviders } from '../keys/provider';
import { TdeObserver } from '../metrics/observer';
import { checkComponents } from '../sstable/components';
import { findTables, liveSSTables } from '../sstable/data-dir';
import { displayName, prefixOf, SSTableFiles } from '../sstable/descriptor';
import { lockHolder } from '../rewrite/lock';
import { Fault, SSTableReader, VerifyReport } from '../sstable/reader';

export interface VerifyOptions {
  dataDir: string;
  config: TdeConfig;
  keyspace?: string;
  tables?: string[];
  onReport?: (report: VerifyReport) => void;
  /** Told of key fetches, KMIP round trips and every batch decrypted (metrics). */
  observer?: TdeObserver;
}

export interface VerifyDirReport {
  dataDir: string;
  sstables: VerifyReport[];
  /** Transaction logs of interrupted rewrites (their debris is not verified). */
  interrupted: string[];
  /**
   * Those of them that are damaged, and why: no run settles them, and every SSTable they name is
   * verified as live (see TxnState.damage).
   */
  damaged: { file: string; damage: string }[];
  /** SSTables too old to read. */
  legacy: string[];
  /** SSTables a concurrent rewrite replaced before verify could read them. */
  replaced: string[];
  /** The process rewriting this data directory, if one is running. */
  rewriteInProgress?: string;
  faults: number;
}

export async function verifyDataDirectory(options: VerifyOptions): Promise<VerifyDirReport> {
  const keys = new KeyProviders(options.config, { observer: options.observer });
  const out: VerifyDirReport = {
    dataDir: options.dataDir,
    sstables: [],
    interrupted: [],
    damaged: [],
    legacy: [],
    replaced: [],
    faults: 0,
  };
  try {
    // The directory is checked first: what is wrong with it says more than its lock could.
    const tables = findTables(options.dataDir, options.keyspace, options.tables);
    // A run holds the data directory, or (through a link from another one) a table directory.
    const holder = [options.dataDir, ...tables.map((t) => t.dir)]
      .map(holderOf)
      .find((h) => h !== undefined);
    if (holder)
      out.rewriteInProgress = `process ${holder.pid} on ${holder.host}, since ${holder.since}`;
    for (const table of tables) {
      let listing: ReturnType<typeof liveSSTables>;
      try {
        listing = liveSSTables(table.dir);
      } catch (err) {
        // A table directory that cannot be listed is a fault of that table; the others are
        // still verified.
        if (!isTdeError(err)) throw err;
        const report = faultReport(`${table.keyspace}.${table.table}`, err, table.dir);
        out.sstables.push(report);
        out.faults += 1;
        options.onReport?.(report);
        continue;
      }
      out.interrupted.push(...listing.interrupted);
      out.damaged.push(...listing.damagedTxns);
      out.legacy.push(...listing.legacy);
      for (const files of listing.sstables) {
        let report: VerifyReport;
        let reader: SSTableReader | undefined;
        try {
          checkComponents(files);
          reader = await SSTableReader.open(files, { keys });
          report = await reader.verify(files.components.find((c) => c.startsWith('Digest.')));
        } catch (err) {
          if (!isTdeError(err)) throw err;
          report = faultReport(displayName(files), err, files.dir);
        } finally {
          await reader?.close();
        }
        // A rewrite running beside us may have replaced this SSTable while it was being read.
        if (report.faults.length > 0 && replaced(table.dir, files)) {
          out.replaced.push(displayName(files));
          continue;
        }
        out.sstables.push(report);
        out.faults += report.faults.length;
        options.onReport?.(report);
      }
    }
  } finally {
    keys.close();
  }
  return out;
}

/** A report of one fault that kept an SSTable (or a whole table) from being read at all. */
function faultReport(name: string, err: TdeError, where: string): VerifyReport {
  const fault: Fault = {
    code: err.code,
    message: err.message,
    file: err.file ?? where,
    chunk: err.chunk,
    offset: err.offset,
    length: err.length,
  };
  return {
    sstable: name,
    chunks: 0,
    storedBytes: 0,
    dataBytes: 0,
    dataChecksum: 0,
    faults: [fault],
  };
}

/** Whether `files` is no longer live in its table directory (a rewrite replaced it). */
function replaced(dir: string, files: SSTableFiles): boolean {
  try {
    return !liveSSTables(dir).sstables.some((s) => prefixOf(s) === prefixOf(files));
  } catch {
    return false; // the directory cannot be listed now: the fault found stands as it is
  }
}

/**
 * A directory's lock holder, for a note: a lock that cannot be read (or is no lock) is no
 * reason to leave the data unchecked.
 */
function holderOf(dir: string): ReturnType<typeof lockHolder> {
  try {
    return lockHolder(dir);
  } catch {
    return undefined;
  }
}
