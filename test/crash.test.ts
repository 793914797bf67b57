/**
 * Crash safety: the rewrite is killed with SIGKILL at points spread over every phase. Afterwards
 * every table must have exactly one complete live SSTable, verify must pass, and running the
 * command again must finish the job with the data unchanged. (test/crash-ops.test.ts kills at
 * counted file-system operations instead of named points; scripts/crash-many.js runs it at every
 * operation of several scenarios.)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import { createKeyFile } from '../src/keys/key-file';
import { CRASH_POINTS } from '../src/rewrite/crash-points';
import { LOCK_NAME, lockDataDirectory } from '../src/rewrite/lock';
import { liveSSTables } from '../src/sstable/data-dir';
import { scanTableDirectory } from '../src/sstable/descriptor';
import { readToc } from '../src/sstable/toc';
import {
  cli,
  cliProcess,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  upgradeCommand,
} from './helpers';

const TABLES = ['legacy_nb_clust', 'legacy_me_clust'];
const SCHEMA = TABLES.map(
  (t) =>
    `ALTER TABLE legacy_tables.${t} WITH compression = {'class': 'EncryptingLZ4Compressor', ` +
    `'chunk_length_kb': 4};`,
).join('\n');

/** upgradesstables over a setup's data directory, schema and keys. */
const upgradeArgs = (s: { dataDir: string; schema: string; keys: { configFile: string } }) =>
  upgradeCommand(s.dataDir, s.schema, s.keys.configFile);

async function setup() {
  const dataDir = makeDataDir((c) => TABLES.includes(c.table));
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const schema = path.join(keys.dir, 'schema.cql');
  fs.writeFileSync(schema, SCHEMA);
  const originals = new Map<string, Buffer>();
  for (const t of TABLES)
    originals.set(t, await readAll(onlySSTable(path.join(dataDir, 'legacy_tables', t))));
  return { dataDir, keys, schema, originals };
}

// With two jobs, both tables' rewrites are under way when the first reaches the point.
const KILLS = [
  ...CRASH_POINTS.map((point) => ({ point, jobs: 1 })),
  ...(['data-writing', 'verified', 'committed'] as const).map((point) => ({ point, jobs: 2 })),
];

for (const { point, jobs } of KILLS) {
  test(
    `killed at "${point}"${jobs > 1 ? ` with ${jobs} jobs` : ''}: one complete SSTable per ` +
      'table, verify passes, a rerun finishes the job',
    async (t) => {
      const s = await setup();
      const args = upgradeArgs(s);
      const killed = await cliProcess([...args, '--jobs', String(jobs)], {
        SSTABLE_TDE_CRASH_AT: point,
      });
      t.is(killed.signal, 'SIGKILL', `the process should have been killed: ${killed.stderr}`);

      for (const table of TABLES) {
        const dir = path.join(s.dataDir, 'legacy_tables', table);
        const live = liveSSTables(dir).sstables;
        t.is(live.length, 1, `${table}: live SSTables ${live.map((l) => l.generation)}`);
        const toc = readToc(path.join(dir, `${live[0].version}-${live[0].generation}-big-TOC.txt`));
        for (const c of toc)
          t.true(live[0].components.includes(c), `${table}: ${c} listed in TOC but missing`);
        t.true((await readAll(live[0], s.keys.config)).equals(s.originals.get(table)!));
      }
      const verify = await cli('verify', '--data-dir', s.dataDir, '--config', s.keys.configFile);
      t.is(verify.code, 0, verify.stdout);

      const rerun = await cli(...args);
      t.is(rerun.code, 0, rerun.stdout + rerun.stderr);
      for (const table of TABLES) {
        const dir = path.join(s.dataDir, 'legacy_tables', table);
        t.deepEqual(
          fs.readdirSync(dir).filter((f) => f.endsWith('.log')),
          [],
          'no transaction log is left',
        );
        const [only, ...rest] = scanTableDirectory(dir).sstables;
        t.is(rest.length, 0, 'no debris is left');
        t.true(only.components.includes('CompressionInfo.db'));
        t.true((await readAll(only, s.keys.config)).equals(s.originals.get(table)!));
      }
      const described = await cli('describe', '--data-dir', s.dataDir, '--json');
      t.true(
        JSON.parse(described.stdout).every(
          (d: { compressor: string }) => d.compressor === 'EncryptingLZ4Compressor',
        ),
      );
    },
  );
}

test(
  'a second rewrite of the same data directory ' + 'refuses, naming the holder of the lock',
  async (t) => {
    const s = await setup();
    const lock = lockDataDirectory(s.dataDir, 'sstable-tde upgradesstables');
    try {
      const r = await cli(...upgradeArgs(s));
      t.is(r.code, 1);
      t.regex(r.stderr, new RegExp(`ERR_TDE_LOCKED.*process ${process.pid} on host`));
      t.regex(r.stderr, /sstable-tde upgradesstables, since/);
    } finally {
      lock.release();
    }
    t.is((await cli(...upgradeArgs(s))).code, 0);
  },
);

test('a lock left by a killed run is taken over', async (t) => {
  const s = await setup();
  const killed = await cliProcess(upgradeArgs(s), { SSTABLE_TDE_CRASH_AT: 'data-written' });
  t.is(killed.signal, 'SIGKILL');
  t.true(fs.existsSync(path.join(s.dataDir, '.sstable-tde.lock')));
  const r = await cli(...upgradeArgs(s));
  t.is(r.code, 0, r.stderr);
  // The log is named inside the data directory, as the SSTables are.
  t.regex(
    r.stdout,
    /^recovered {2}legacy_tables\/\w+\/sstable-tde-txn-\w+-2-big\.log: .*rolled back/m,
  );
  t.false(fs.existsSync(path.join(s.dataDir, '.sstable-tde.lock')));
});

test('files killed lock takers left (private files, a guard) are removed by the next one', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-lockdebris-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dead = JSON.stringify({ pid: 999999, host: os.hostname() });
  const deadTemp = `${LOCK_NAME}.tmp-${os.hostname()}-999999-0123abcd`;
  const liveTemp = `${LOCK_NAME}.tmp-${os.hostname()}-${process.pid}-4567cdef`;
  const otherHost = `${LOCK_NAME}.tmp-some-other-host-999999-89abcdef`;
  fs.writeFileSync(path.join(dir, deadTemp), dead);
  fs.writeFileSync(path.join(dir, liveTemp), '');
  fs.writeFileSync(path.join(dir, otherHost), '');
  fs.writeFileSync(path.join(dir, `${LOCK_NAME}.break`), dead);
  const lock = lockDataDirectory(dir, 'test');
  lock.release();
  // Only files of dead processes on this host go: a live one may be mid-way, another host's
  // processes cannot be checked from here.
  t.deepEqual(fs.readdirSync(dir).sort(), [liveTemp, otherHost].sort());
});

for (const [point, lost] of [
  ['old-partly-removed', /[A-Za-z.]+(, [A-Za-z.]+)*/],
  ['old-removed', /all its files/],
] as const) {
  test(
    `a commit record lost once the old SSTable's removal began (killed at "${point}"): ` +
      'nothing is rolled back onto it, and verify and the rerun name the damaged log',
    async (t) => {
      const s = await setup();
      const args = upgradeArgs(s);
      const killed = await cliProcess(args, { SSTABLE_TDE_CRASH_AT: point });
      t.is(killed.signal, 'SIGKILL', killed.stderr);

      // The disk then loses the commit record, as a faulty one could.
      const [table] = TABLES.filter((x) =>
        fs.readdirSync(path.join(s.dataDir, 'legacy_tables', x)).some((f) => f.endsWith('.log')),
      );
      const dir = path.join(s.dataDir, 'legacy_tables', table);
      const [log] = fs.readdirSync(dir).filter((f) => f.endsWith('.log'));
      const file = path.join(dir, log);
      fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('commit\n', ''));
      // The killed run's lock on the table directory is taken over and removed by the rerun.
      const before = fs
        .readdirSync(dir)
        .filter((f) => f !== LOCK_NAME)
        .sort();
      const damage = new RegExp(
        String.raw`it does not record a commit, yet \w\w-1-big has lost ` +
          `${lost.source}, which only a committed rewrite removes`,
      );

      const verify = await cli('verify', '--data-dir', s.dataDir, '--config', s.keys.configFile);
      t.regex(verify.stdout, new RegExp(`note +damaged transaction log \\(.*${log}\\): `));
      t.regex(verify.stdout, damage);
      t.notRegex(verify.stdout, new RegExp(`interrupted rewrite \\(.*${log}\\)`));

      const rerun = await cli(...args);
      const output = rerun.stdout + rerun.stderr;
      t.is(rerun.code, 1, output);
      t.regex(output, new RegExp(`damaged transaction log ${log.replace(/\./g, '\\.')} \\(`));
      t.regex(output, damage);
      t.deepEqual(fs.readdirSync(dir).sort(), before, 'nothing removed but the stale lock');
      // The new SSTable, complete, still holds the data.
      t.true(
        (await readAll({ ...onlySSTableOf(dir, '2'), dir }, s.keys.config)).equals(
          s.originals.get(table)!,
        ),
      );
    },
  );
}

function onlySSTableOf(dir: string, generation: string) {
  const [files] = scanTableDirectory(dir).sstables.filter((x) => x.generation === generation);
  return files;
}
