/**
 * `upgradesstables`: rewrite SSTables whose compression or encryption differs from their table's.
 */
import * as path from 'node:path';

import { Command } from 'commander';
import * as cliProgress from 'cli-progress';

import { loadSchema } from '../schema/cql';
import { MAX_JOBS, SSTableResult, upgradeSSTables, UpgradeEvent } from '../rewrite/upgrade';
import type { Recovery } from '../rewrite/txn';
import {
  addConfigOption,
  addMetricsOption,
  configFrom,
  EXIT_FAILURE,
  EXIT_OK,
  Io,
  metricsFor,
  mib,
  printMetrics,
  reportError,
} from './common';

function line(r: SSTableResult): string {
  switch (r.status) {
    case 'rewritten':
      return (
        `rewritten  ${r.sstable} -> ${r.newSSTable?.split('/').pop()} (${r.dataBytes} bytes of ` +
        `data; Data.db ${r.storedBytesBefore} -> ${r.storedBytesAfter} bytes; ` +
        `${(r.seconds ?? 0).toFixed(2)} s)\n` +
        `           ${r.from} -> ${r.to}`
      );
    case 'unchanged':
      return `unchanged  ${r.sstable} (already ${r.from})`;
    case 'skipped':
      return `skipped    ${r.sstable}: ${r.reason}`;
    default:
      // Rolled back because of an interrupt: nothing to fix, the next run does it.
      if (r.error?.code === 'ERR_TDE_CANCELLED')
        return `cancelled  ${r.sstable}: interrupted and rolled back; left as it was`;
      return `FAILED     ${r.sstable}: [${r.error?.code}] ${r.error?.message}`;
  }
}

/** --jobs as a number, or the message that refuses it as it was typed. */
function jobsOf(text: string | undefined): number | string | undefined {
  if (text === undefined) return undefined;
  const n = /^\d{1,3}$/.test(text) ? Number(text) : 0;
  if (n >= 1 && n <= MAX_JOBS) return n;
  return `--jobs takes a whole number from 1 to ${MAX_JOBS}, not ${JSON.stringify(text)}`;
}

export function upgradeSSTablesCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('upgradesstables')
    .description('rewrite SSTables into the compression and encryption their tables ask for')
    .argument('[keyspace]', 'only this keyspace')
    .argument('[tables...]', 'only these tables of the keyspace')
    .requiredOption('--data-dir <dir>', 'Cassandra data directory (KEYSPACE/TABLE[-id]/ inside)')
    .option(
      '--schema <file>',
      'CQL file with CREATE TABLE / ALTER TABLE ... WITH compression = {...} (optional ' +
        'for system.batchlog and system.paxos, which follow system_info_encryption)',
    )
    .option(
      '-a, --include-all-sstables',
      'rewrite every SSTable, even those already as their table asks',
    )
    .option('--ignore-digest', 'rewrite even when Data.db does not match its Digest file')
    .option(
      '-j, --jobs <n>',
      `SSTables to rewrite at once (1 to ${MAX_JOBS}; default 1): more overlap the syncs of small ` +
        'SSTables, each job taking its own memory',
    )
    .option('--json', 'print a JSON summary instead of text');
  addConfigOption(cmd);
  addMetricsOption(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde upgradesstables --data-dir /var/lib/cassandra/data --schema schema.cql ` +
      `--config dse.yaml
  sstable-tde upgradesstables --data-dir data --schema schema.cql -a cycling cyclist_name
  sstable-tde upgradesstables --data-dir data --config dse.yaml -a system batchlog paxos

Each SSTable is written anew beside the old one, synced, verified, and only then made live; the
old one is removed last. If the command is killed, run it again: it finishes or undoes what was
interrupted before doing anything else.`,
  );

  cmd.action(
    async (
      keyspace: string | undefined,
      tables: string[],
      opts: {
        dataDir: string;
        schema?: string;
        includeAllSstables?: boolean;
        ignoreDigest?: boolean;
        jobs?: string;
        json?: boolean;
        config?: string;
        metrics?: boolean;
      },
    ) => {
      const json = Boolean(opts.json);
      const metrics = metricsFor(opts);
      let bar: cliProgress.SingleBar | undefined;
      try {
        const config = configFrom(opts);
        if (!opts.schema && !config.systemInfoEncryption?.enabled) {
          io.err(
            'sstable-tde: give --schema FILE (only system.batchlog and system.paxos can go ' +
              'without one, when system_info_encryption is enabled in --config)',
          );
          done(2);
          return;
        }
        const jobs = jobsOf(opts.jobs);
        if (typeof jobs === 'string') {
          io.err(`sstable-tde: ${jobs}`);
          done(2);
          return;
        }
        const schema = opts.schema ? loadSchema(opts.schema) : new Map();
        // Bytes of the SSTables done, and of each one in progress (several with --jobs).
        let base = 0;
        const current = new Map<string, number>();
        const shown = () => base + [...current.values()].reduce((a, b) => a + b, 0);
        // Without a progress bar (output to a file or pipe, or CI), each SSTable's line is
        // written as it ends, so that a log shows progress and keeps what was done if the run is
        // killed; with one, the lines follow it at the end.
        const streaming = !json && !io.interactive;
        // A recovered log is named inside the data directory, as the SSTables are.
        const recoveredLine = (r: Recovery) =>
          `recovered  ${path.relative(opts.dataDir, r.log)}: interrupted rewrite ${r.action} ` +
          `(removed ${r.removed})`;
        const onEvent = (e: UpgradeEvent) => {
          if (e.type === 'done' && streaming) io.out(line(e.result));
          if (e.type === 'recovered' && streaming) io.out(recoveredLine(e.recovery));
          if (e.type === 'plan' && io.interactive && !json && e.sstables > 0) {
            bar = new cliProgress.SingleBar(
              {
                stream: io.stderr,
                format: ' {bar} {percentage}% | {done}/{all} MiB | {sstable}',
                hideCursor: true,
                clearOnComplete: true,
              },
              cliProgress.Presets.shades_classic,
            );
            bar.start(e.bytes, 0, { done: '0', all: mib(e.bytes), sstable: '' });
          } else if (e.type === 'start') {
            current.set(e.sstable, 0);
            bar?.update(shown(), { sstable: e.sstable, done: mib(shown()) });
          } else if (e.type === 'progress') {
            current.set(e.sstable, e.bytes);
            bar?.update(shown(), { done: mib(shown()) });
          } else if (
            e.type === 'done' &&
            e.result.status !== 'unchanged' &&
            e.result.status !== 'skipped'
          ) {
            base += e.result.dataBytes ?? current.get(e.result.sstable) ?? 0;
            current.delete(e.result.sstable);
            bar?.update(shown(), { done: mib(shown()) });
          }
        };

        // The first Ctrl-C (or SIGTERM) rolls back the SSTable in progress and stops; a second one
        // stops at once, which is still safe: the next run finishes or undoes the interrupted one.
        const controller = new AbortController();
        const onSignal = (signal: NodeJS.Signals) => {
          if (controller.signal.aborted) process.exit(130);
          bar?.stop();
          const again = signal === 'SIGINT' ? 'press Ctrl-C again' : `send ${signal} again`;
          io.err(
            `sstable-tde: ${signal}: rolling back the SSTable${(jobs ?? 1) === 1 ? '' : 's'} in ` +
              `progress (${again} to stop at once)`,
          );
          controller.abort();
        };
        const stopListening = onInterrupt(onSignal);
        const report = await upgradeSSTables({
          signal: controller.signal,
          dataDir: opts.dataDir,
          schema,
          config,
          includeAll: Boolean(opts.includeAllSstables),
          ignoreDigest: Boolean(opts.ignoreDigest),
          jobs,
          keyspace,
          tables,
          onEvent,
          observer: metrics,
        }).finally(stopListening);
        bar?.stop();
        bar = undefined;

        if (json) {
          const out = metrics ? { ...report, metrics: metrics.snapshot() } : report;
          io.out(JSON.stringify(out, null, 2));
        } else {
          for (const w of report.warnings)
            io.err(`sstable-tde: warning: table ${w.table}: ${w.message}`);
          if (!streaming) for (const r of report.recovered) io.out(recoveredLine(r));
          if (!streaming) for (const r of report.results) io.out(line(r));
          for (const m of report.missing) {
            io.out(
              `MISSING    ${m}: named in ${opts.schema ?? 'the schema'} but has no directory in ` +
                `${opts.dataDir} (a typo, ` +
                'or is --data-dir not the directory that holds the keyspace directories?)',
            );
          }
          io.out(
            `\n${report.rewritten} rewritten, ${report.unchanged} unchanged, ` +
              `${report.skipped} skipped, ${report.failed} failed`,
          );
          printMetrics(io, metrics);
        }
        if (report.failed > 0 && !json) {
          // SSTables rolled back because of an interrupt have nothing to fix.
          const failedSSTables = report.results.filter(
            (r) => r.status === 'failed' && r.error?.code !== 'ERR_TDE_CANCELLED',
          ).length;
          if (failedSSTables > 0) {
            io.err(
              `sstable-tde: ${failedSSTables} SSTable(s) could not be rewritten (FAILED above; ` +
                'each is left as it was unless its line says otherwise); fix the cause and run ' +
                'the command again',
            );
          }
          if (report.missing.length > 0) {
            io.err(
              `sstable-tde: ${report.missing.length} table(s) named in the schema have no ` +
                `directory (MISSING above)`,
            );
          }
        }
        if (controller.signal.aborted) {
          io.err('sstable-tde: interrupted; run the same command again to carry on');
          done(130);
          return;
        }
        done(report.failed > 0 ? EXIT_FAILURE : EXIT_OK);
      } catch (err) {
        bar?.stop();
        done(reportError(io, err, json));
      }
    },
  );
  return cmd;
}

/**
 * One listener per signal however many runs this process has going (tests run many at once),
 * handing SIGINT and SIGTERM to each. Returns the call that stops `handler` hearing them.
 */
const interruptHandlers = new Set<(signal: NodeJS.Signals) => void>();
function dispatchInterrupt(signal: NodeJS.Signals): void {
  for (const handler of [...interruptHandlers]) handler(signal);
}
function onInterrupt(handler: (signal: NodeJS.Signals) => void): () => void {
  if (interruptHandlers.size === 0) {
    process.on('SIGINT', dispatchInterrupt);
    process.on('SIGTERM', dispatchInterrupt);
  }
  interruptHandlers.add(handler);
  return () => {
    interruptHandlers.delete(handler);
    if (interruptHandlers.size === 0) {
      process.removeListener('SIGINT', dispatchInterrupt);
      process.removeListener('SIGTERM', dispatchInterrupt);
    }
  };
}
