/**
 * `managekmip list|expirekey|revoke|destroy`: the key lifecycle on a KMIP group, as dsetool has it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command } from 'commander';

import { findTables, indexDirectories } from '../sstable/data-dir';
import { exists, isDirectory } from '../util/files';
import { inspectSSTable } from '../sstable/inspect';
import { componentPath, scanTableDirectory } from '../sstable/descriptor';
import { TdeError } from '../errors';
import { expireKey, keyState, KeyRow, listKeys, revokedState } from '../keys/kmip-admin';
import { KeyProviders } from '../keys/provider';
import { parseKmipUrl, TdeConfig } from '../config/config';
import { addConfigOption, configFrom, EXIT_OK, Io, reportError } from './common';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A date as DSE's managekmip list prints it: `Mon Apr 25 20:25:47 UTC 2016`. */
export function dseDate(seconds: bigint | undefined): string {
  if (seconds === undefined) return 'n/a';
  const d = new Date(Number(seconds) * 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${p(d.getUTCDate())} ` +
    `${p(d.getUTCHours())}:` +
    `${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} UTC ${d.getUTCFullYear()}`
  );
}

const iso = (s: bigint | undefined) =>
  s === undefined ? null : new Date(Number(s) * 1000).toISOString();

function table(rows: KeyRow[]): string[] {
  const header = [
    'ID',
    'Name',
    'Cipher',
    'State',
    'Activation Date',
    'Creation Date',
    'Protect Stop Date',
    'Namespace',
  ];
  const cells = rows.map((r) => [
    r.id,
    r.name ?? 'n/a',
    r.cipher ?? r.algorithm ?? 'n/a',
    r.state ?? 'n/a',
    dseDate(r.activationDate),
    dseDate(r.initialDate),
    dseDate(r.protectStopDate),
    r.objectGroup ?? 'n/a',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  return [header, ...cells].map((c) =>
    c
      .map((v, i) => v.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
}

/** What a data directory holds that bears on destroying a KMIP key. */
interface KeyUse {
  /** Every SSTable looked at: live ones, and the copies in snapshots/ and backups/. */
  sstables: number;
  /** The Data.db of each whose CompressionInfo.db names the key. */
  needing: string[];
  /** SSTables whose metadata could not be read, so which key they need is unknown. */
  unreadable: string[];
}

/**
 * The SSTables under a data directory (or a backup of one) that need this KMIP key, the copies in
 * each table's snapshots/ and backups/ included: a snapshot under the old key is lost with it.
 */
function keyUse(dataDir: string, group: string, id: string): KeyUse {
  const use: KeyUse = { sstables: 0, needing: [], unreadable: [] };
  // A keyspace or table directory behind a link that leads nowhere (a disk not mounted) may
  // hold SSTables that need the key: it counts as unreadable, never as empty.
  use.unreadable.push(...unreachable(dataDir));
  for (const ks of listDirectory(dataDir, use)) {
    if (ks.startsWith('.')) continue;
    const ksDir = path.join(dataDir, ks);
    if (isDirectory(ksDir)) use.unreadable.push(...unreachable(ksDir));
  }
  for (const t of findTables(dataDir)) {
    const dirs = [t.dir];
    for (const copies of ['backups', 'snapshots']) {
      const where = path.join(t.dir, copies);
      if (!exists(where)) continue;
      if (copies === 'backups') dirs.push(where);
      else for (const tag of listDirectory(where, use)) dirs.push(path.join(where, tag));
    }
    // Secondary-index SSTables (in .<index> directories of each of these) are checked too.
    dirs.push(...dirs.flatMap(indexDirectories));
    for (const dir of dirs) {
      if (!isDirectory(dir)) {
        use.unreadable.push(`${dir} (not a directory that can be reached)`);
        continue;
      }
      let sstables: ReturnType<typeof scanTableDirectory>['sstables'];
      try {
        sstables = scanTableDirectory(dir).sstables;
      } catch (err) {
        use.unreadable.push(`${dir} (${errorText(err)})`);
        continue;
      }
      for (const files of sstables) {
        use.sstables++;
        const data = componentPath(files, 'Data.db');
        try {
          const o = inspectSSTable(files).compressionInfo?.options ?? {};
          if (o.kmip_host !== group) continue;
          if (o.kmip_key_id !== undefined && sameKeyId(o.kmip_key_id, id)) use.needing.push(data);
          // Written without a key id (as some DSE versions do): any key of the group may be it.
          else if (o.kmip_key_id === undefined) use.unreadable.push(`${data} (names no key id)`);
        } catch (err) {
          use.unreadable.push(`${data} (${errorText(err)})`);
        }
      }
    }
  }
  return use;
}

/** Whether two KMIP key ids name one key: as text, or as the same number (`01` and `1`). */
function sameKeyId(a: string, b: string): boolean {
  const x = a.trim();
  const y = b.trim();
  return x === y || (/^\d+$/.test(x) && /^\d+$/.test(y) && BigInt(x) === BigInt(y));
}

/** Entries of `dir`, or none with the failure noted in `use` (a directory that cannot be read). */
function listDirectory(dir: string, use: KeyUse): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    use.unreadable.push(`${dir} (${errorText(err)})`);
    return [];
  }
}

/** Links in `dir` whose target cannot be reached. */
function unreachable(dir: string): string[] {
  const out: string[] = [];
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out; // findTables reports a directory it cannot read
  }
  for (const e of entries) {
    if (!e.isSymbolicLink() || e.name.startsWith('.')) continue;
    try {
      fs.statSync(path.join(dir, e.name));
    } catch (err) {
      out.push(`${path.join(dir, e.name)} (a link that leads nowhere: ${errorText(err)})`);
    }
  }
  return out;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Refuses to destroy a key that SSTables under `dataDirs` may still need. A directory with no
 * SSTable at all is refused too: it is most likely not the data directory meant, and checking
 * it would prove nothing.
 */
function checkUnused(dataDirs: string[], group: string, id: string, config: TdeConfig): void {
  // The configuration's own encrypted values would be lost with it.
  const named = parseKmipUrl(config.configEncryptionKeyName?.trim() ?? '');
  if (named && named.group === group && sameKeyId(named.id, id)) {
    throw new TdeError(
      'ERR_TDE_KEY_IN_USE',
      `key ${id} of ${group} is config_encryption_key_name in ${config.file ?? 'the config'}: ` +
        'the encrypted values there would become unreadable; make a new key, encrypt the values ' +
        'again with it (encryptconfigvalue) and name it there first, or pass --force',
    );
  }
  if (dataDirs.length === 0) {
    throw new TdeError(
      'ERR_TDE_KEY_IN_USE',
      `destroying key ${id} of ${group} makes every SSTable encrypted with it unreadable, so ` +
        'destroy first checks that none is left: give --data-dir for each directory that may ' +
        'hold such SSTables (the data directory, backups), or pass --force to destroy it ' +
        'unchecked',
    );
  }
  for (const dir of dataDirs) {
    const use = keyUse(dir, group, id);
    if (use.sstables === 0) {
      throw new TdeError(
        'ERR_TDE_DATA_DIR',
        `found no SSTable under ${dir}, so nothing there shows that key ${id} of ${group} is ` +
          'unused: is --data-dir the directory that holds the keyspace directories ' +
          '(KEYSPACE/TABLE/)? Give the right one, or pass --force to destroy the key unchecked',
        { file: dir },
      );
    }
    if (use.needing.length > 0) {
      throw new TdeError(
        'ERR_TDE_KEY_IN_USE',
        `key ${id} of ${group} is still needed by ${use.needing.length} ` +
          `SSTable(s) under ${dir}, which would become unreadable:\n  - ` +
          `${use.needing.join('\n  - ')}\n` +
          'rewrite them first (upgradesstables --include-all-sstables; remove snapshots taken ' +
          'before), or pass --force if they may be lost',
      );
    }
    if (use.unreadable.length > 0) {
      throw new TdeError(
        'ERR_TDE_KEY_IN_USE',
        `${use.unreadable.length} SSTable(s) or director(ies) under ${dir} could not be read ` +
          `to tell which key they need, so key ${id} of ${group} may still be needed:\n  - ` +
          `${use.unreadable.join('\n  - ')}\n` +
          'make them readable (mount the disk a link leads to), restore or remove them ' +
          '(verify tells what is wrong), or pass --force',
      );
    }
  }
}

export function manageKmipCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('managekmip').description(
    'list, expire, revoke and destroy keys on a KMIP group',
  );

  const withClient = async (
    opts: { config?: string; json?: boolean },
    group: string,
    body: (keys: KeyProviders) => Promise<void>,
  ) => {
    const json = Boolean(opts.json);
    let keys: KeyProviders | undefined;
    try {
      keys = new KeyProviders(configFrom(opts));
      keys.kmipProvider.client(group);
      await body(keys);
      done(EXIT_OK);
    } catch (err) {
      done(reportError(io, err, json));
    } finally {
      keys?.close();
    }
  };

  const list = new Command('list')
    .description('list the keys this client may see on a KMIP group')
    .argument('<group>', 'kmip_hosts group')
    .option('--json', 'print JSON');
  addConfigOption(list).addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip list kmip_group --config dse.yaml
  sstable-tde managekmip list kmip_group --json --config dse.yaml`,
  );
  list.action((group: string, opts: { config?: string; json?: boolean }) =>
    withClient(opts, group, async (keys) => {
      const rows = await listKeys(keys.kmipProvider.client(group));
      if (opts.json) {
        io.out(
          JSON.stringify(
            rows.map((r) => ({
              id: r.id,
              name: r.name ?? null,
              cipher: r.cipher ?? r.algorithm ?? null,
              length: r.length ?? null,
              state: r.state ?? null,
              activationDate: iso(r.activationDate),
              creationDate: iso(r.initialDate),
              protectStopDate: iso(r.protectStopDate),
              namespace: r.objectGroup ?? null,
            })),
            null,
            2,
          ),
        );
      } else {
        for (const line of table(rows)) io.out(line);
      }
    }),
  );

  const expire = new Command('expirekey')
    .description('stop using a key to encrypt, now or at a given time; it still decrypts')
    .argument('<group>', 'kmip_hosts group')
    .argument('<key_id>', 'KMIP key id')
    .argument('[datetime]', 'when, e.g. 2027-01-31T00:00:00Z (default: now)')
    .option('--json', 'print JSON');
  addConfigOption(expire).addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip expirekey kmip_group 42 --config dse.yaml
  sstable-tde managekmip expirekey kmip_group 42 2027-01-31T00:00:00Z --config dse.yaml

After the key cache refreshes (key_cache_millis), new data is encrypted with another key.`,
  );
  expire.action(
    (
      group: string,
      id: string,
      datetime: string | undefined,
      opts: { config?: string; json?: boolean },
    ) =>
      withClient(opts, group, async (keys) => {
        const when = datetime === undefined ? new Date() : new Date(datetime);
        if (Number.isNaN(when.getTime())) {
          throw new TdeError(
            'ERR_TDE_INVALID_ARGUMENT',
            `"${datetime}" is not a date and time; write it as 2027-01-31T00:00:00Z`,
          );
        }
        const how = await expireKey(keys.kmipProvider.client(group), id, when);
        if (opts.json)
          io.out(
            JSON.stringify({ group, id, protectStopDate: when.toISOString(), recordedAs: how }),
          );
        else
          io.out(
            `Key ${id} of ${group} stops encrypting at ${when.toISOString()} (recorded as ` +
              `${how}); it still decrypts.`,
          );
      }),
  );

  const revoke = new Command('revoke')
    .description('revoke a key: it never encrypts again, but still decrypts until destroyed')
    .argument('<group>', 'kmip_hosts group')
    .argument('<key_id>', 'KMIP key id')
    .option('--compromised', 'revoke for key compromise rather than cessation of operation')
    .option('-m, --message <text>', 'revocation message recorded on the server')
    .option('--json', 'print JSON');
  addConfigOption(revoke).addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip revoke kmip_group 42 --config dse.yaml
  sstable-tde managekmip revoke kmip_group 42 --compromised -m "laptop lost" --config dse.yaml

Then rewrite the data encrypted with it: upgradesstables --include-all-sstables.`,
  );
  revoke.action(
    (
      group: string,
      id: string,
      opts: { config?: string; json?: boolean; compromised?: boolean; message?: string },
    ) =>
      withClient(opts, group, async (keys) => {
        const reason = opts.compromised ? 'KeyCompromise' : 'CessationOfOperation';
        await keys.kmipProvider.client(group).revoke(id, reason, opts.message);
        if (opts.json) io.out(JSON.stringify({ group, id, revoked: true, reason }));
        else
          io.out(
            `Key ${id} of ${group} is revoked (${reason}); it still decrypts until destroyed.`,
          );
      }),
  );

  const destroy = new Command('destroy')
    .description('destroy a revoked key on the server; data still encrypted with it is lost')
    .argument('<group>', 'kmip_hosts group')
    .argument('<key_id>', 'KMIP key id')
    .option(
      '--data-dir <dir>',
      'refuse if SSTables under this directory (data, or a backup) still need the key; give ' +
        'it once per directory (required unless --force)',
      (dir: string, dirs: string[]) => [...dirs, dir],
      [] as string[],
    )
    .option('--force', 'destroy even if the key is not revoked or SSTables still need it')
    .option('--json', 'print JSON');
  addConfigOption(destroy).addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip destroy kmip_group 42 --data-dir /var/lib/cassandra/data \\
      --data-dir /backups/cassandra --config dse.yaml

Revoke the key and rewrite the data first (upgradesstables --include-all-sstables); give every
directory that may still hold SSTables encrypted with it, backups included. Each table's
snapshots/ and backups/ are checked too.`,
  );
  destroy.action(
    (
      group: string,
      id: string,
      opts: { config?: string; json?: boolean; dataDir: string[]; force?: boolean },
    ) =>
      withClient(opts, group, async (keys) => {
        const client = keys.kmipProvider.client(group);
        if (!opts.force) {
          const state = await keyState(client, id);
          if (!revokedState(state)) {
            throw new TdeError(
              'ERR_TDE_KEY_IN_USE',
              `key ${id} of ${group} is ${state ?? 'in an unknown state'}, not revoked: ` +
                `revoke it first ("sstable-tde managekmip revoke ${group} ${id}"), rewrite the ` +
                `data encrypted with it, then destroy it (or pass --force)`,
            );
          }
          checkUnused(opts.dataDir, group, id, configFrom(opts));
        }
        await client.destroy(id);
        if (opts.json) io.out(JSON.stringify({ group, id, destroyed: true }));
        else io.out(`Key ${id} of ${group} is destroyed.`);
      }),
  );

  for (const sub of [list, expire, revoke, destroy]) cmd.addCommand(sub);
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip list kmip_group --config dse.yaml
  sstable-tde managekmip expirekey kmip_group 42 --config dse.yaml`,
  );
  return cmd;
}
