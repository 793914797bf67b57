/** Shared test helpers: fixture copies in temporary directories, key files, CLI runs. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { run } from '../src/cli/main';
import { configFromObject, TdeConfig } from '../src/config/config';
import { KeyProviders } from '../src/keys/provider';
import { scanTableDirectory, SSTableFiles } from '../src/sstable/descriptor';
import { SSTableReader } from '../src/sstable/reader';

export const ROOT = path.join(__dirname, '..');
export const FIXTURES = path.join(__dirname, 'fixtures');
export const CORPUS = path.join(FIXTURES, 'sstables');

/** Every corpus table: `<format>/<keyspace>/<table>`. */
export interface CorpusTable {
  format: string;
  keyspace: string;
  table: string;
  dir: string;
}

export function corpusTables(): CorpusTable[] {
  const out: CorpusTable[] = [];
  for (const format of fs
    .readdirSync(CORPUS)
    .filter((f) => !f.includes('.'))
    .sort()) {
    for (const keyspace of fs.readdirSync(path.join(CORPUS, format)).sort()) {
      for (const table of fs.readdirSync(path.join(CORPUS, format, keyspace)).sort()) {
        out.push({ format, keyspace, table, dir: path.join(CORPUS, format, keyspace, table) });
      }
    }
  }
  return out;
}

/** Tables the corpus README marks as deliberately corrupted. */
export const CORRUPT_TABLES = new Set(['lz4_invalid_checksums', 'lz4_invalid_digest']);

export function tempDir(label: string): string {
  return trackTemp(fs.mkdtempSync(path.join(os.tmpdir(), `sstable-tde-${label}-`)));
}

/**
 * A data directory `DATA/<keyspace>/<table>/` holding writable copies of the chosen corpus
 * tables (default: all that are not deliberately corrupted).
 */
export function makeDataDir(
  filter: (t: CorpusTable) => boolean = (t) => !CORRUPT_TABLES.has(t.table),
): string {
  const root = tempDir('data');
  for (const t of corpusTables().filter(filter)) {
    const dest = path.join(root, t.keyspace, t.table);
    fs.mkdirSync(dest, { recursive: true });
    for (const f of fs.readdirSync(t.dir)) {
      fs.copyFileSync(path.join(t.dir, f), path.join(dest, f));
      fs.chmodSync(path.join(dest, f), 0o644);
    }
  }
  return root;
}

export interface KeySetup {
  dir: string;
  configFile: string;
  config: TdeConfig;
}

/** A key directory with a dse.yaml-style config pointing at it (keys made by the caller). */
export function makeKeySetup(): KeySetup {
  const dir = tempDir('keys');
  fs.chmodSync(dir, 0o700);
  const configFile = path.join(dir, 'dse.yaml');
  fs.writeFileSync(configFile, `system_key_directory: ${dir}\n`);
  return { dir, configFile, config: configFromObject({ system_key_directory: dir }) };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in this process, capturing its output. */
export async function cli(...args: string[]): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await run(args, {
    out: (t) => (stdout += t + '\n'),
    err: (t) => (stderr += t + '\n'),
    interactive: false,
    stderr: process.stderr,
  });
  return { code, stdout, stderr };
}

const execFileAsync = promisify(execFile);

/** Runs the built CLI as a separate process (for exit codes and crash tests). */
export async function cliProcess(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult & { signal?: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(
      process.execPath,
      ['--import=tsx', path.join(ROOT, 'src/cli/run.ts'), ...args],
      {
        env: { ...process.env, ...env },
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; signal?: string; stdout: string; stderr: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      signal: e.signal ?? undefined,
      stdout: e.stdout,
      stderr: e.stderr,
    };
  }
}

/** The one SSTable in a table directory (fails the test if there is not exactly one). */
export function onlySSTable(dir: string): SSTableFiles {
  const { sstables } = scanTableDirectory(dir);
  if (sstables.length !== 1)
    throw new Error(`expected one SSTable in ${dir}, found ${sstables.length}`);
  return sstables[0];
}

/** The uncompressed data of an SSTable, read with this package's reader. */
export async function readAll(files: SSTableFiles, config?: TdeConfig): Promise<Buffer> {
  const keys = new KeyProviders(config ?? configFromObject({ system_key_directory: os.tmpdir() }));
  const reader = await SSTableReader.open(files, { keys });
  try {
    const parts: Buffer[] = [];
    for await (const batch of reader.batches()) parts.push(...batch);
    return Buffer.concat(parts);
  } finally {
    await reader.close();
    keys.close();
  }
}

/** SHA-256 of every file under a directory, by relative path. */
export function treeHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else
        out[path.relative(dir, p)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Temporary directories made by tests, removed when the test process exits. */
const made: string[] = [];
process.on('exit', () => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});
export function trackTemp(dir: string): string {
  made.push(dir);
  return dir;
}

/** Runs the CLI as a process with `input` on its standard input (not a terminal). */
export function cliWithInput(args: string[], input: string): CliResult {
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const r = spawnSync(
    process.execPath,
    ['--import=tsx', path.join(ROOT, 'src/cli/run.ts'), ...args],
    { input, encoding: 'utf8' },
  );
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The CLI arguments of an upgradesstables run over a data directory, schema and config. */
export function upgradeCommand(dataDir: string, schema: string, configFile: string): string[] {
  return ['upgradesstables', '--data-dir', dataDir, '--schema', schema, '--config', configFile];
}
