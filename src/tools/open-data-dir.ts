/**
 * What a storage process does at start-up with its data directory: check that every live SSTable
 * can be read with the keys at hand (key check value, metadata tag, the first chunk and the first
 * page of each encrypted component), and act on the ones that cannot as `disk_failure_policy`
 * says. DSE skips undecryptable SSTables silently; here every one is reported, whatever the policy.
 */
import { TdeConfig } from '../config/config';
import { isTdeError, TdeError } from '../errors';
import { KeyProvider, KeyProviders } from '../keys/provider';
import { checkComponents } from '../sstable/components';
import { findTables, liveSSTables } from '../sstable/data-dir';
import { displayName, SSTableFiles } from '../sstable/descriptor';
import { EncryptedComponent } from '../sstable/page-file';
import { SSTableReader } from '../sstable/reader';

/**
 * Cassandra's disk_failure_policy values: `stop` (and `die`, `stop_paranoid`) refuse to start;
 * `best_effort` leaves the SSTable out and warns; `ignore` keeps it and warns.
 */
export type DiskFailurePolicy = 'die' | 'stop_paranoid' | 'stop' | 'best_effort' | 'ignore';

export interface UnreadableSSTable {
  sstable: string;
  code: string;
  message: string;
}

export interface OpenedDataDirectory {
  /** SSTables to serve (with `ignore`, the unreadable ones too). */
  sstables: SSTableFiles[];
  /** SSTables that could not be read, each with why. */
  unreadable: UnreadableSSTable[];
}

export interface OpenDataDirectoryOptions {
  /** Keys, and `disk_failure_policy` where the option below is not given. */
  config: TdeConfig;
  /** Key providers to use; otherwise made from `config` and closed again. */
  keys?: KeyProvider;
  diskFailurePolicy?: DiskFailurePolicy;
  /** Told of every unreadable SSTable, whatever the policy. */
  onWarning?: (warning: UnreadableSSTable & { action: 'skipped' | 'ignored' }) => void;
}

const POLICIES: DiskFailurePolicy[] = ['die', 'stop_paranoid', 'stop', 'best_effort', 'ignore'];

async function probe(files: SSTableFiles, keys: KeyProvider): Promise<void> {
  checkComponents(files);
  const reader = await SSTableReader.open(files, { keys });
  try {
    if (reader.chunkCount > 0) await reader.readChunks(0, 1);
    for (const component of reader.encryptedComponents) {
      const c = await reader.openComponent(component);
      try {
        if (c instanceof EncryptedComponent && c.size > 0) await c.read(0, 1);
      } finally {
        await c.close();
      }
    }
  } finally {
    await reader.close();
  }
}

export async function openDataDirectory(
  dataDir: string,
  options: OpenDataDirectoryOptions,
): Promise<OpenedDataDirectory> {
  // The option wins over the setting of the same name in the config file (cassandra.yaml's).
  const policy = (options.diskFailurePolicy ??
    options.config.raw.disk_failure_policy ??
    'stop') as DiskFailurePolicy;
  if (!POLICIES.includes(policy)) {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `disk_failure_policy "${String(policy)}" is not one of ${POLICIES.join(', ')}`,
      { file: options.config.file },
    );
  }
  const keys = options.keys ?? new KeyProviders(options.config);
  const out: OpenedDataDirectory = { sstables: [], unreadable: [] };
  try {
    for (const table of findTables(dataDir)) {
      for (const files of liveSSTables(table.dir).sstables) {
        try {
          await probe(files, keys);
          out.sstables.push(files);
        } catch (err) {
          if (!isTdeError(err)) throw err;
          const problem = { sstable: displayName(files), code: err.code, message: err.message };
          out.unreadable.push(problem);
          if (policy === 'die' || policy === 'stop' || policy === 'stop_paranoid') {
            throw new TdeError(
              'ERR_TDE_UNREADABLE_SSTABLE',
              `SSTable ${problem.sstable} cannot be read, and ` +
                `disk_failure_policy is ${policy}: ${err.message}. Restore the key it needs, ` +
                `move the SSTable ` +
                'away, or set disk_failure_policy to best_effort to start without it',
              err.context,
              err,
            );
          }
          const action = policy === 'ignore' ? 'ignored' : 'skipped';
          if (action === 'ignored') out.sstables.push(files);
          options.onWarning?.({ ...problem, action });
        }
      }
    }
  } finally {
    if (!options.keys) keys.close();
  }
  return out;
}
