/**
 * `managekmip list|expirekey|revoke|destroy`: the key lifecycle on a KMIP group, as dsetool has it.
 */
import { Command } from 'commander';

import { findTables, liveSSTables } from '../sstable/data-dir';
import { inspectSSTable } from '../sstable/inspect';
import { componentPath } from '../sstable/descriptor';
import { TdeError } from '../errors';
import { expireKey, keyState, KeyRow, listKeys, revokedState } from '../keys/kmip-admin';
import { KeyProviders } from '../keys/provider';
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

/** SSTables under a data directory whose CompressionInfo.db names this KMIP key. */
function sstablesNeeding(dataDir: string, group: string, id: string): string[] {
  const out: string[] = [];
  for (const t of findTables(dataDir)) {
    for (const files of liveSSTables(t.dir).sstables) {
      try {
        const s = inspectSSTable(files);
        const o = s.compressionInfo?.options ?? {};
        if (o.kmip_host === group && o.kmip_key_id === id)
          out.push(componentPath(files, 'Data.db'));
      } catch {
        // an unreadable SSTable is verify's business, not destroy's
      }
    }
  }
  return out;
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
      'refuse if SSTables under this directory (data, or a backup) still need the key',
    )
    .option('--force', 'destroy even if the key is not revoked or SSTables still need it')
    .option('--json', 'print JSON');
  addConfigOption(destroy).addHelpText(
    'after',
    `
Examples:
  sstable-tde managekmip destroy kmip_group 42 --data-dir /var/lib/cassandra/data --config dse.yaml
  sstable-tde managekmip destroy kmip_group 42 --data-dir /backups/cassandra --config dse.yaml

Revoke the key and rewrite the data first (upgradesstables --include-all-sstables); give every
directory that may still hold SSTables encrypted with it, backups included.`,
  );
  destroy.action(
    (
      group: string,
      id: string,
      opts: { config?: string; json?: boolean; dataDir?: string; force?: boolean },
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
          if (opts.dataDir) {
            const needing = sstablesNeeding(opts.dataDir, group, id);
            if (needing.length > 0) {
              throw new TdeError(
                'ERR_TDE_KEY_IN_USE',
                `key ${id} of ${group} is still needed by ${needing.length} ` +
                  `SSTable(s) under ${opts.dataDir}, which would become unreadable:\n  - ` +
                  `${needing.join('\n  - ')}\n` +
                  'rewrite them first (upgradesstables --include-all-sstables), or pass --force ' +
                  'if they may be lost',
              );
            }
          }
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
