/** What every command shares: exit codes, error printing, and the config option. */
import { Command } from 'commander';

import { readConfig, TdeConfig } from '../config/config';
import { isTdeError } from '../errors';
import { formatMetrics, TdeMetrics } from '../metrics/metrics';

/** Exit codes, documented in the README. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Where commands write; tests capture these instead of the process streams. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  /** True when stderr is a terminal a progress bar can redraw. */
  interactive: boolean;
  stderr: NodeJS.WriteStream;
}

export function processIo(): Io {
  return {
    out: (t) => process.stdout.write(t + '\n'),
    err: (t) => process.stderr.write(t + '\n'),
    interactive: Boolean(process.stderr.isTTY) && !process.env.CI,
    stderr: process.stderr,
  };
}

export function addConfigOption(cmd: Command): Command {
  return cmd.option('--config <file>', 'dse.yaml-style configuration (system_key_directory, ...)');
}

/** `--metrics`: count keys, KMIP round trips and chunks during the run, and print them. */
export function addMetricsOption(cmd: Command): Command {
  return cmd.option(
    '--metrics',
    'count keys fetched, KMIP requests and latency, chunks and ' +
      'bytes encrypted and decrypted, integrity failures; print them on stderr (with --json, in ' +
      'the report)',
  );
}

/** A counter for the run when --metrics was given. */
export function metricsFor(opts: { metrics?: boolean }): TdeMetrics | undefined {
  return opts.metrics ? new TdeMetrics() : undefined;
}

/** Prints the counters for a person (stderr); --json commands put them in their report instead. */
export function printMetrics(io: Io, metrics: TdeMetrics | undefined): void {
  if (!metrics) return;
  io.err('metrics:');
  for (const line of formatMetrics(metrics.snapshot())) io.err(line);
}

export function configFrom(opts: { config?: string }): TdeConfig {
  return readConfig(opts.config);
}

/** Prints an error for a person (stderr) and, with --json, for a script (stdout). */
export function reportError(io: Io, err: unknown, json: boolean): number {
  const code = isTdeError(err) ? err.code : 'ERR_TDE_INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  io.err(`sstable-tde: error [${code}]: ${message}`);
  if (!isTdeError(err) && err instanceof Error && err.stack && process.env.SSTABLE_TDE_DEBUG)
    io.err(err.stack);
  if (json) io.out(JSON.stringify({ error: { code, message } }));
  return EXIT_FAILURE;
}

export function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 3 : 1);
}

/** "1 chunk", "2 chunks"; `many` for irregular plurals ("entries"). */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}
