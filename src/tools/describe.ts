/** `describe`: what each SSTable is, from its metadata alone; no key is needed or shown. */
import { describeParams } from '../compression/options';
import { isTdeError } from '../errors';
import { findTables, liveSSTables } from '../sstable/data-dir';
import { displayName } from '../sstable/descriptor';
import { inspectSSTable } from '../sstable/inspect';

export interface SSTableDescription {
  sstable: string;
  keyspace: string;
  table: string;
  version: string;
  format: string;
  generation: string;
  /** Compressor class, or null for an uncompressed table. */
  compressor: string | null;
  /** Options recorded in CompressionInfo.db (class options and key names; never key bytes). */
  options: Record<string, string>;
  encrypted: boolean;
  /**
   * Components stored encrypted: Data.db for an encrypting class, and the index and metadata ones
   * listed.
   */
  encryptedComponents: string[];
  summary: string;
  chunkLength: number;
  chunkCount: number;
  dataBytes: number;
  storedBytes: number;
  components: string[];
  error?: { code: string; message: string };
}

export function describeDataDirectory(
  dataDir: string,
  keyspace?: string,
  tables?: string[],
): SSTableDescription[] {
  const out: SSTableDescription[] = [];
  for (const table of findTables(dataDir, keyspace, tables)) {
    for (const files of liveSSTables(table.dir).sstables) {
      const base = {
        sstable: displayName(files),
        keyspace: table.keyspace,
        table: table.table,
        version: files.version,
        format: files.format,
        generation: files.generation,
        components: files.components,
      };
      try {
        const s = inspectSSTable(files);
        out.push({
          ...base,
          compressor: s.params.enabled ? (s.params.className as string) : null,
          options: s.compressionInfo?.options ?? {},
          encrypted: s.params.encryption !== undefined,
          encryptedComponents:
            s.params.encryption === undefined
              ? []
              : ['Data.db', ...(s.compressionInfo?.options.encrypted_components?.split(',') ?? [])],
          summary: describeParams(s.params),
          chunkLength: s.chunkLength,
          chunkCount: s.chunkCount,
          dataBytes: s.dataLength,
          storedBytes: s.storedLength,
        });
      } catch (err) {
        if (!isTdeError(err)) throw err;
        out.push({
          ...base,
          compressor: null,
          options: {},
          encrypted: false,
          encryptedComponents: [],
          summary: 'unreadable',
          chunkLength: 0,
          chunkCount: 0,
          dataBytes: 0,
          storedBytes: 0,
          error: { code: err.code, message: err.message },
        });
      }
    }
  }
  return out;
}
