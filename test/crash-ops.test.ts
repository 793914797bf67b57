/**
 * Crash safety at counted moments: a first run of upgradesstables under test/crash-hook.js lists
 * every file-system operation it makes in the data directory (lock, transaction log, each write,
 * fsync, chmod, link, commit, each removal). Then, for chosen operations N, a fresh copy is
 * rewritten by a process killed with SIGKILL just before operation N, and afterwards:
 *
 *   - every table has exactly one live SSTable, complete as its TOC.txt lists it, whose data
 *     equals the original, and `verify` passes;
 *   - running the command again finishes the job: one SSTable per table with the schema's
 *     compression, the same data, no transaction log, lock or other debris left anywhere.
 *
 * The same points are also made to fail with EIO instead, as a failing disk would: the command
 * must then stop with a coded error and leave the same guarantees.
 *
 * `npm test` kills at a sample of points spread over the first scenario's run.
 * `node scripts/crash-many.js` kills at every operation of every scenario (several hundred
 * points), optionally also killing the recovering run (`--twice`).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import { readConfig } from '../src/config/config';
import { createKeyFile } from '../src/keys/key-file';
import { LOCK_NAME } from '../src/rewrite/lock';
import { liveSSTables } from '../src/sstable/data-dir';
import { scanTableDirectory } from '../src/sstable/descriptor';
import { readToc } from '../src/sstable/toc';
import { cli, cliProcess, makeDataDir, makeKeySetup, onlySSTable, readAll, ROOT } from './helpers';

const HOOK = path.join(ROOT, 'test', 'crash-hook.js');
const MODE = process.env.SSTABLE_TDE_CRASH_OPS ?? 'sample';
const TWICE = process.env.SSTABLE_TDE_CRASH_TWICE === '1';
const SAMPLE_POINTS = 12;

interface Scenario {
  name: string;
  tables: { keyspace: string; table: string }[];
  /** Schema applied (and not killed) before the run under test, if any. */
  before?: string;
  /** Schema of the run that is killed. */
  schema: string;
  /** Compressor class every table has once the job is done. */
  finalClass: string | undefined;
}

const alter = (tables: Scenario['tables'], options: string) =>
  tables
    .map((t) => `ALTER TABLE ${t.keyspace}.${t.table} WITH compression = {${options}};`)
    .join('\n');

const ENCRYPT_TABLES = [
  { keyspace: 'legacy_tables', table: 'legacy_nb_clust' },
  { keyspace: 'legacy_tables', table: 'legacy_me_clust' },
];
const REKEY_TABLES = [
  { keyspace: 'legacy_tables', table: 'legacy_da_clust' },
  { keyspace: 'legacy_tables', table: 'legacy_oa_simple' },
];
const DECRYPT_TABLES = [
  { keyspace: 'test_ks', table: 'pk_types_snappy' },
  { keyspace: 'test_ks', table: 'simple_uncompressed' },
];

const SCENARIOS: Scenario[] = [
  {
    name: 'encrypt',
    tables: ENCRYPT_TABLES,
    schema: alter(ENCRYPT_TABLES, "'class': 'EncryptingLZ4Compressor', 'chunk_length_kb': 4"),
    finalClass: 'EncryptingLZ4Compressor',
  },
  {
    name: 'rekey GCM to CBC',
    tables: REKEY_TABLES,
    before: alter(
      REKEY_TABLES,
      "'class': 'EncryptingSnappyCompressor', 'cipher_algorithm': " +
        "'AES/GCM/NoPadding', 'secret_key_strength': 256, 'system_key_file': 'gcm_key'",
    ),
    schema: alter(REKEY_TABLES, "'class': 'EncryptingDeflateCompressor', 'chunk_length_kb': 8"),
    finalClass: 'EncryptingDeflateCompressor',
  },
  {
    name: 'decrypt to uncompressed',
    tables: DECRYPT_TABLES,
    before: alter(DECRYPT_TABLES, "'class': 'Encryptor', 'chunk_length_kb': 16"),
    schema: alter(DECRYPT_TABLES, "'enabled': false"),
    finalClass: undefined,
  },
];

interface Setup {
  dataDir: string;
  configFile: string;
  /** The starting state's schema (when the scenario has one) and the schema under test. */
  before?: string;
  schema: string;
  originals: Map<string, Buffer>;
}

const tableDir = (dataDir: string, t: { keyspace: string; table: string }) =>
  path.join(dataDir, t.keyspace, t.table);

/** A fresh data directory, keys and schema files for a scenario; its `before` not yet applied. */
function files(s: Scenario): Setup {
  const dataDir = makeDataDir((c) => s.tables.some((t) => t.table === c.table));
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  createKeyFile(keys.dir, 'gcm_key', 'AES/GCM/NoPadding', 256);
  const schema = path.join(keys.dir, 'schema.cql');
  fs.writeFileSync(schema, s.schema);
  let before: string | undefined;
  if (s.before) {
    before = path.join(keys.dir, 'before.cql');
    fs.writeFileSync(before, s.before);
  }
  return { dataDir, configFile: keys.configFile, before, schema, originals: new Map() };
}

/** A scenario's starting state, with the original data of each table. */
async function setup(s: Scenario): Promise<Setup> {
  const x = files(s);
  for (const t of s.tables)
    x.originals.set(t.table, await readAll(onlySSTable(tableDir(x.dataDir, t))));
  if (x.before) {
    const r = await cli(...runArgs(x, x.before));
    if (r.code !== 0) throw new Error(`preparing ${s.name}: ${r.stdout}${r.stderr}`);
  }
  return x;
}

const runArgs = (x: Setup, schema = x.schema) => [
  'upgradesstables',
  '--data-dir',
  x.dataDir,
  '--schema',
  schema,
  '--config',
  x.configFile,
];

function hookEnv(x: Setup, extra: Record<string, string>): NodeJS.ProcessEnv {
  const inherited = process.env.NODE_OPTIONS ? `${process.env.NODE_OPTIONS} ` : '';
  return {
    NODE_OPTIONS: `${inherited}--require=${HOOK}`,
    SSTABLE_TDE_FS_ROOT: x.dataDir,
    ...extra,
  };
}

/**
 * The operations of one complete run, as the hook lists them. Tests must be declared
 * synchronously, so this runs the CLI synchronously, in child processes.
 */
function traceOf(s: Scenario): string[] {
  const x = files(s);
  const cliSync = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(
      process.execPath,
      ['--import=tsx', path.join(ROOT, 'src/cli/run.ts'), ...args],
      {
        env: { ...process.env, ...env },
        encoding: 'utf8',
      },
    );
    if (r.status !== 0)
      throw new Error(`the counting run of ${s.name} failed: ${r.stdout}${r.stderr}`);
  };
  if (x.before) cliSync(runArgs(x, x.before));
  const trace = path.join(path.dirname(x.configFile), 'trace');
  cliSync(runArgs(x), hookEnv(x, { SSTABLE_TDE_FS_TRACE: trace }));
  return fs
    .readFileSync(trace, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.replace(/^\d+ /, ''));
}

/** At most this many killed processes at once, whatever the number of tests. */
let running = 0;
const queue: (() => void)[] = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= Math.max(1, os.cpus().length)) await new Promise<void>((r) => queue.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    queue.shift()?.();
  }
}

/**
 * Points spread evenly over the run, first and last included, plus the first operation of each
 * landmark: moments where a torn state would be worst.
 */
function sample(ops: string[], count: number): number[] {
  const total = ops.length;
  const out = new Set<number>();
  for (let k = 0; k < count; k++) out.add(1 + Math.round((k * (total - 1)) / (count - 1)));
  const landmarks = [
    /^fsync \.sstable-tde\.lock\.tmp-/, // the lock's private file exists, the lock does not yet
    /^handle\.writev .*-Data\.db$/, // the new Data.db is being written
    /^write .*sstable-tde-txn-/, // the log records the intent (first) ...
  ];
  for (const re of landmarks) {
    const i = ops.findIndex((o) => re.test(o));
    if (i >= 0) out.add(i + 1);
  }
  // ... and the commit: the second write to the first log.
  const commits = ops
    .map((o, i) => (/^write .*sstable-tde-txn-/.test(o) ? i + 1 : 0))
    .filter(Boolean);
  if (commits.length > 1) out.add(commits[1]);
  // The old TOC.txt's removal (the old SSTable is no longer listed) and the log's removal.
  const oldToc = ops.findIndex((o) => /^rm .*-1-big-TOC\.txt$/.test(o));
  if (oldToc >= 0) out.add(oldToc + 1);
  const log = ops.findIndex((o) => /^rm .*sstable-tde-txn-/.test(o));
  if (log >= 0) out.add(log + 1);
  return [...out].sort((a, b) => a - b);
}

/** After a crash: one complete live SSTable per table with the original data; verify passes. */
async function checkLiveState(t: any, s: Scenario, x: Setup, when: string): Promise<void> {
  const config = readConfig(x.configFile);
  for (const table of s.tables) {
    const dir = tableDir(x.dataDir, table);
    const live = liveSSTables(dir).sstables;
    t.is(
      live.length,
      1,
      `${when}: ${table.table} has live SSTables ${live.map((l) => l.generation)}`,
    );
    const toc = readToc(
      path.join(dir, `${live[0].version}-${live[0].generation}-${live[0].format}-TOC.txt`),
    );
    for (const c of toc)
      t.true(
        live[0].components.includes(c),
        `${when}: ${table.table}: ${c} listed in TOC.txt is missing`,
      );
    t.true(
      (await readAll(live[0], config)).equals(x.originals.get(table.table)!),
      `${when}: ${table.table}'s data changed`,
    );
  }
  const verify = await cli('verify', '--data-dir', x.dataDir, '--config', x.configFile);
  t.is(verify.code, 0, `${when}: ${verify.stdout}${verify.stderr}`);
}

/** After a complete run: the job is done and nothing but the new SSTables is left. */
async function checkFinished(t: any, s: Scenario, x: Setup): Promise<void> {
  const config = readConfig(x.configFile);
  t.deepEqual(
    fs.readdirSync(x.dataDir).sort(),
    [...new Set(s.tables.map((tb) => tb.keyspace))].sort(),
    'the data directory holds only keyspace directories: no lock or lock temporary file is left',
  );
  for (const table of s.tables) {
    const dir = tableDir(x.dataDir, table);
    const [only, ...rest] = scanTableDirectory(dir).sstables;
    t.is(rest.length, 0, `${table.table}: no second SSTable is left`);
    const prefix = `${only.version}-${only.generation}-${only.format}-`;
    t.deepEqual(
      fs.readdirSync(dir).filter((f) => !f.startsWith(prefix)),
      [],
      `${table.table}: no debris or log`,
    );
    t.true(
      (await readAll(only, config)).equals(x.originals.get(table.table)!),
      `${table.table}'s data changed`,
    );
  }
  const described = await cli('describe', '--data-dir', x.dataDir, '--json');
  t.deepEqual(
    JSON.parse(described.stdout).map((d: { compressor?: string }) => d.compressor ?? undefined),
    s.tables.map(() => s.finalClass),
  );
}

const traces = new Map<string, string[]>();
const chosen = MODE === 'all' ? SCENARIOS : SCENARIOS.slice(0, 1);
for (const scenario of chosen) {
  const ops = traceOf(scenario);
  traces.set(scenario.name, ops);
  const points = MODE === 'all' ? ops.map((_, i) => i + 1) : sample(ops, SAMPLE_POINTS);

  test(`${scenario.name}: the counting run saw every kind of operation`, (t) => {
    // If a change moved file I/O out of reach of the hook, the points below would test less.
    for (const kind of ['open-for-write', 'handle.writev', 'handle.sync', 'fsync', 'link', 'rm']) {
      t.true(
        ops.some((o) => o.startsWith(`${kind} `)),
        `${kind} not seen in ${ops.length} operations`,
      );
    }
    t.true(
      ops.some((o) => /^write .*sstable-tde-txn-/.test(o)),
      'transaction log writes',
    );
    t.true(
      ops[0].includes(LOCK_NAME) && ops[ops.length - 1] === `rm ${LOCK_NAME}`,
      'the lock comes first and goes last',
    );
  });

  for (const n of points) {
    const at = `operation ${n}/${ops.length} (${ops[n - 1]})`;
    test(`${scenario.name}: killed before ${at}`, async (t) => {
      const x = await setup(scenario);
      const killed = await limited(() =>
        cliProcess(runArgs(x), hookEnv(x, { SSTABLE_TDE_KILL_AT_OP: String(n) })),
      );
      t.is(
        killed.signal,
        'SIGKILL',
        `the process should have been killed: ${killed.stdout}${killed.stderr}`,
      );
      await checkLiveState(t, scenario, x, 'after the kill');

      if (TWICE) {
        // The recovering run is killed too, early (where it finishes or undoes the first one).
        const m = 1 + ((n * 7919) % 40);
        const again = await limited(() =>
          cliProcess(runArgs(x), hookEnv(x, { SSTABLE_TDE_KILL_AT_OP: String(m) })),
        );
        t.true(
          again.signal === 'SIGKILL' || again.code === 0,
          `second run: ${again.stdout}${again.stderr}`,
        );
        await checkLiveState(
          t,
          scenario,
          x,
          `after also killing the rerun before its operation ${m}`,
        );
      }

      const rerun = await cli(...runArgs(x));
      t.is(rerun.code, 0, rerun.stdout + rerun.stderr);
      await checkFinished(t, scenario, x);
    });

    test(`${scenario.name}: ${at.replace(' (', ' fails with EIO (')}`, async (t) => {
      const x = await setup(scenario);
      const failed = await limited(() =>
        cliProcess(runArgs(x), hookEnv(x, { SSTABLE_TDE_FAIL_AT_OP: String(n) })),
      );
      const output = failed.stdout + failed.stderr;
      // Not errors: failing to give a new file its owner (as root; the file is then the
      // caller's own, see matchOwner) or to tidy up the lock once the work is done (a lock or
      // temporary file left names a process that is gone, and the next run takes it over).
      const harmless = /^chown |^rm \.sstable-tde\.lock(\.tmp-.*)?$/.test(ops[n - 1]);
      t.is(failed.code, harmless ? 0 : 1, output);
      if (failed.code === 1) {
        t.regex(output, /\[ERR_TDE_IO\]:? .*EIO: i\/o error/, 'a coded error naming the cause');
        t.notRegex(
          output,
          /ERR_TDE_INTERNAL|ERR_TDE_REWRITE_FAILED|\n +at /,
          'no uncoded error or stack trace',
        );
      }
      await checkLiveState(t, scenario, x, 'after the failure');
      const rerun = await cli(...runArgs(x));
      t.is(rerun.code, 0, rerun.stdout + rerun.stderr);
      await checkFinished(t, scenario, x);
    });
  }
}

test(
  'a second rewrite while a first one runs refuses, naming the first process; the first then ' +
    'finishes',
  async (t) => {
    const scenario = SCENARIOS[0];
    const ops = traces.get(scenario.name)!;
    const x = await setup(scenario);
    // The first run is stopped (SIGSTOP) as it starts writing its first new Data.db: in the
    // middle of its work, holding the lock.
    const at = ops.findIndex((o) => /^open-for-write .*-Data\.db$/.test(o)) + 1;
    t.true(at > 0);
    const first = spawn(
      process.execPath,
      ['--import=tsx', path.join(ROOT, 'src/cli/run.ts'), ...runArgs(x)],
      {
        env: { ...process.env, ...hookEnv(x, { SSTABLE_TDE_STOP_AT_OP: String(at) }) },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    first.stdout.on('data', (d) => (output += d));
    first.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) =>
      first.on('exit', (code) => resolve(code)),
    );
    t.teardown(() => first.kill('SIGKILL'));
    const state = () => {
      try {
        const stat = fs.readFileSync(`/proc/${first.pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      } catch {
        return 'gone';
      }
    };
    while (state() !== 'T') {
      t.not(state(), 'gone', `the first run ended before it was stopped: ${output}`);
      if (state() === 'gone') return;
      await new Promise((r) => setTimeout(r, 20));
    }

    const second = await cliProcess(runArgs(x));
    t.is(second.code, 1);
    t.regex(
      second.stderr,
      new RegExp(
        `ERR_TDE_LOCKED.*locked by process ${first.pid} on host ${os.hostname()} ` +
          '\\(sstable-tde upgradesstables, since \\d{4}-\\d\\d-\\d\\dT',
      ),
    );
    t.regex(
      second.stderr,
      /wait for it to finish, or if that process no longer runs, remove .*\.sstable-tde\.lock/,
    );

    process.kill(first.pid!, 'SIGCONT');
    t.is(await exited, 0, output);
    await checkFinished(t, scenario, x);
  },
);
