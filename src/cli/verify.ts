/** `verify`: check every chunk, checksum and digest; name each fault. */
import { Command } from 'commander';

import { verifyDataDirectory } from '../tools/verify';
import {
  addConfigOption,
  addMetricsOption,
  configFrom,
  EXIT_FAILURE,
  EXIT_OK,
  Io,
  metricsFor,
  plural,
  printMetrics,
  reportError,
} from './common';

export function verifyCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('verify')
    .description(
      'read every chunk of every SSTable: checksums, digest, decryption and decompression',
    )
    .argument('[keyspace]', 'only this keyspace')
    .argument('[tables...]', 'only these tables of the keyspace')
    .requiredOption('--data-dir <dir>', 'Cassandra data directory')
    .option('--json', 'print a JSON report instead of text');
  addConfigOption(cmd);
  addMetricsOption(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde verify --data-dir /var/lib/cassandra/data --config dse.yaml
  sstable-tde verify --data-dir data --json cycling

Exits 1 if any fault is found; each fault names the SSTable file, chunk index and offset.`,
  );

  cmd.action(
    async (
      keyspace: string | undefined,
      tables: string[],
      opts: { dataDir: string; json?: boolean; config?: string; metrics?: boolean },
    ) => {
      const json = Boolean(opts.json);
      const metrics = metricsFor(opts);
      try {
        const report = await verifyDataDirectory({
          observer: metrics,
          dataDir: opts.dataDir,
          config: configFrom(opts),
          keyspace,
          tables,
          onReport: json
            ? undefined
            : (r) => {
                if (r.faults.length === 0) {
                  io.out(
                    `ok     ${r.sstable}: ${plural(r.chunks, 'chunk')}, ${r.dataBytes} bytes of ` +
                      `data`,
                  );
                  return;
                }
                io.out(`FAULT  ${r.sstable}: ${plural(r.faults.length, 'fault')}`);
                for (const f of r.faults) io.out(`         [${f.code}] ${f.message}`);
              },
        });
        if (json) {
          const out = metrics ? { ...report, metrics: metrics.snapshot() } : report;
          io.out(JSON.stringify(out, null, 2));
        } else {
          if (report.rewriteInProgress) {
            io.out(
              `note   an upgradesstables run holds this data directory or a table in it ` +
                `(${report.rewriteInProgress}); SSTables it replaced while verify ran were skipped`,
            );
          } else {
            const damaged = new Set(report.damaged.map((d) => d.file));
            for (const t of report.interrupted.filter((x) => !damaged.has(x))) {
              io.out(`note   interrupted rewrite (${t}): run upgradesstables again to finish it`);
            }
            for (const d of report.damaged) {
              io.out(
                `note   damaged transaction log (${d.file}): ${d.damage}. No run settles it: keep ` +
                  'the SSTable it names that verifies (the newer, if both do), remove the ' +
                  "other's files, then the log",
              );
            }
          }
          for (const s of report.replaced)
            io.out(`note   ${s} was replaced while verify ran; not verified`);
          for (const l of report.legacy)
            io.out(`note   ${l}: SSTable version older than la, not verified`);
          // An SSTable whose key could not be fetched was not checked: say so, lest its fault
          // read as damage.
          const unchecked = report.sstables.filter((r) =>
            r.faults.some((f) => f.code === 'ERR_TDE_KMIP_UNAVAILABLE'),
          ).length;
          io.out(
            `\n${plural(report.sstables.length, 'SSTable')} verified, ` +
              `${plural(report.faults, 'fault')}` +
              (unchecked > 0
                ? ` (${plural(unchecked, 'SSTable')} not checked: no KMIP server could be ` +
                  'reached for the key; run verify again once one can)'
                : ''),
          );
          printMetrics(io, metrics);
        }
        if (report.sstables.length === 0 && report.replaced.length === 0) {
          io.err(
            `sstable-tde: found no SSTable under ${opts.dataDir}: is --data-dir the directory ` +
              `that holds the keyspace directories (KEYSPACE/TABLE/)?`,
          );
          done(EXIT_FAILURE);
          return;
        }
        done(report.faults > 0 ? EXIT_FAILURE : EXIT_OK);
      } catch (err) {
        done(reportError(io, err, json));
      }
    },
  );
  return cmd;
}
