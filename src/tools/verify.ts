/**
 * `verify`: reads every chunk of every live SSTable, checks chunk checksums and the digest,
 * decrypts and decompresses, and reports each fault with its SSTable, chunk and offset.
 */
import { TdeConfig } from '../config/config';
import { isTdeError } from '../errors';
import { KeyProviders } from '../keys/provider';
import { findTables, liveSSTables } from '../sstable/data-dir';
import { displayName } from '../sstable/descriptor';
import { Fault, SSTableReader, VerifyReport } from '../sstable/reader';

export interface VerifyOptions {
  dataDir: string;
  config: TdeConfig;
  keyspace?: string;
  tables?: string[];
  onReport?: (report: VerifyReport) => void;
}

export interface VerifyDirReport {
  dataDir: string;
  sstables: VerifyReport[];
  /** Transaction logs of interrupted rewrites (their debris is not verified). */
  interrupted: string[];
  /** SSTables too old to read. */
  legacy: string[];
  faults: number;
}

export async function verifyDataDirectory(options: VerifyOptions): Promise<VerifyDirReport> {
  const keys = new KeyProviders(options.config);
  const out: VerifyDirReport = { dataDir: options.dataDir, sstables: [], interrupted: [], legacy: [], faults: 0 };
  try {
    for (const table of findTables(options.dataDir, options.keyspace, options.tables)) {
      const listing = liveSSTables(table.dir);
      out.interrupted.push(...listing.interrupted);
      out.legacy.push(...listing.legacy);
      for (const files of listing.sstables) {
        let report: VerifyReport;
        let reader: SSTableReader | undefined;
        try {
          reader = await SSTableReader.open(files, { keys });
          report = await reader.verify(files.components.find((c) => c.startsWith('Digest.')));
        } catch (err) {
          if (!isTdeError(err)) throw err;
          const fault: Fault = { code: err.code, message: err.message, file: err.file ?? files.dir,
            chunk: err.chunk, offset: err.offset, length: err.length };
          report = { sstable: displayName(files), chunks: 0, storedBytes: 0, dataBytes: 0, dataChecksum: 0, faults: [fault] };
        } finally {
          await reader?.close();
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
