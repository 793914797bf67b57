/** Cases found by trying to break the tool: each must now fail loudly or behave, never silently. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import { createKeyFile } from '../src/keys/key-file';
import { lockDataDirectory, LOCK_NAME } from '../src/rewrite/lock';
import { verifyDataDirectory } from '../src/tools/verify';
import { parseCompressionInfo, serializeCompressionInfo } from '../src/sstable/compression-info';
import {
  cli,
  cliProcess,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  ROOT,
  treeHashes,
  upgradeCommand,
} from './helpers';

async function setup(tables: string[], key = 'AES/CBC/PKCS5Padding') {
  const dataDir = makeDataDir((c) => tables.includes(c.table));
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', key, 128);
  const schema = (body: string) => {
    const f = path.join(keys.dir, `s${Math.random().toString(36).slice(2)}.cql`);
    fs.writeFileSync(f, body);
    return f;
  };
  const run = (...args: string[]) => cli(...args, '--config', keys.configFile);
  return { dataDir, keys, schema, run };
}

test(
  'whole chunks swapped in an unauthenticated SSTable: verify does not call the digest alone ' +
    'wrong, upgrade refuses',
  async (t) => {
    const s = await setup(['legacy_nb_clust']);
    const enc = s.schema(
      `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor', ` +
        `'chunk_length_in_kb': 16};`,
    );
    t.is((await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc)).code, 0);
    const files = onlySSTable(path.join(s.dataDir, 'legacy_tables', 'legacy_nb_clust'));
    const dataFile = path.join(files.dir, `nb-${files.generation}-big-Data.db`);
    const data = fs.readFileSync(dataFile);
    const n = 16400 + 16 + 4; // IV + padded 16 KiB + checksum: every full chunk has this size
    const swapped = Buffer.concat([
      data.subarray(0, n),
      data.subarray(2 * n, 3 * n),
      data.subarray(n, 2 * n),
      data.subarray(3 * n),
    ]);
    t.is(swapped.length, data.length);
    fs.writeFileSync(dataFile, swapped);

    const v = await s.run('verify', '--data-dir', s.dataDir);
    t.is(v.code, 1);
    t.regex(v.stdout, /whole chunks were reordered or replaced/);
    t.notRegex(v.stdout, /digest file alone is wrong/);
    const before = treeHashes(s.dataDir);
    const dec = s.schema(
      `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'LZ4Compressor'};`,
    );
    const up = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', dec);
    t.is(up.code, 1);
    t.deepEqual(treeHashes(s.dataDir), before);
  },
);

test(
  'schema tables with no directory in the data ' + 'directory are MISSING and fail the run',
  async (t) => {
    const s = await setup(['legacy_nb_clust']);
    const typo = s.schema(
      `ALTER TABLE legacy_tables.legacy_nb_clsut WITH compression = {'class': 'Encryptor'};`,
    );
    const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', typo);
    t.is(r.code, 1);
    t.regex(r.stdout, /MISSING +legacy_tables\.legacy_nb_clsut: named in .* but has no directory/);
    // One level too high: the directory that holds the data directory.
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-parent-'));
    fs.renameSync(s.dataDir, path.join(parent, 'data'));
    const tooHigh = await s.run(
      'upgradesstables',
      '--data-dir',
      parent,
      '--schema',
      s.schema(
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
      ),
    );
    t.is(tooHigh.code, 1);
    t.regex(tooHigh.stdout, /MISSING/);
    fs.rmSync(parent, { recursive: true, force: true });
  },
);

test(
  'schema typos are errors: unknown statements, a missing "=", duplicate options, an empty ' +
    'file',
  async (t) => {
    const s = await setup(['legacy_nb_clust']);
    const cases: [string, RegExp][] = [
      [
        `ALTER TABEL legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
        /ALTER TABEL is not a statement.*did you mean "TABLE"/,
      ],
      [
        `ALTR TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
        /"ALTR" does not start a CQL statement.*ALTER/,
      ],
      [
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression {'class': 'Encryptor'};`,
        /expected a table option/,
      ],
      [
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor', ` +
          `'class': 'LZ4Compressor'};`,
        /given twice/,
      ],
      [
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': Encryptor};`,
        /expected a quoted value/,
      ],
      ['', /names no table/],
      ['-- only a comment\n', /names no table/],
    ];
    for (const [body, expected] of cases) {
      const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', s.schema(body));
      t.is(r.code, 1, body);
      t.regex(r.stderr, expected, body);
    }
  },
);

test('symbolically linked table and keyspace directories are followed', async (t) => {
  const s = await setup(['legacy_nb_clust', 'legacy_me_simple']);
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-elsewhere-'));
  fs.renameSync(
    path.join(s.dataDir, 'legacy_tables', 'legacy_me_simple'),
    path.join(elsewhere, 'legacy_me_simple'),
  );
  fs.symlinkSync(
    path.join(elsewhere, 'legacy_me_simple'),
    path.join(s.dataDir, 'legacy_tables', 'legacy_me_simple'),
  );
  const enc = s.schema(
    ['legacy_nb_clust', 'legacy_me_simple']
      .map((tb) => `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': 'Encryptor'};`)
      .join('\n'),
  );
  const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc, '--json');
  t.is(r.code, 0, r.stdout);
  t.is(JSON.parse(r.stdout).rewritten, 2);
  t.is(onlySSTable(path.join(elsewhere, 'legacy_me_simple')).generation, '2');
  fs.rmSync(elsewhere, { recursive: true, force: true });
});

test('a table linked into two data directories is rewritten by one run at a time', async (t) => {
  // The keyspace directory lives in one data directory and is linked from another: each run
  // holds its own data directory's lock, so the table directory needs its own.
  const s = await setup(['legacy_nb_simple']);
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-other-data-'));
  fs.symlinkSync(path.join(s.dataDir, 'legacy_tables'), path.join(other, 'legacy_tables'));
  const tableDir = path.join(s.dataDir, 'legacy_tables', 'legacy_nb_simple');
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = {'class': 'Encryptor'};`,
  );

  // A live run (this process) holds the table: the run through the other data directory stops
  // before it changes anything, and says who holds it.
  const lock = path.join(tableDir, LOCK_NAME);
  fs.writeFileSync(
    lock,
    JSON.stringify({ pid: process.pid, host: os.hostname(), command: 'x', since: 'now' }),
  );
  const before = treeHashes(s.dataDir);
  const held = await s.run('upgradesstables', '--data-dir', other, '--schema', enc);
  t.is(held.code, 1);
  t.regex(
    held.stderr,
    /\[ERR_TDE_LOCKED\]: table directory .*legacy_nb_simple is locked by process/,
  );
  t.deepEqual(treeHashes(s.dataDir), before);
  // verify through either data directory tells of the run holding the table.
  const seen = await s.run('verify', '--data-dir', other);
  t.is(seen.code, 0, seen.stderr);
  t.regex(seen.stdout + seen.stderr, new RegExp(`process ${process.pid} on `));

  // Once it is free, the run goes ahead and leaves no lock behind.
  fs.rmSync(lock);
  const free = await s.run('upgradesstables', '--data-dir', other, '--schema', enc);
  t.is(free.code, 0, free.stderr);
  t.is(onlySSTable(tableDir).generation, '2');
  t.false(fs.readdirSync(tableDir).some((f) => f.includes('lock')));

  // One table directory met twice in one data directory is refused, naming both paths.
  fs.symlinkSync(path.join(s.dataDir, 'legacy_tables'), path.join(s.dataDir, 'alias'));
  const twice = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc, '-a');
  t.is(twice.code, 1);
  t.regex(
    twice.stderr,
    /\[ERR_TDE_DATA_DIR\]: .*legacy_nb_simple and .*legacy_nb_simple are one directory/,
  );
  t.is(onlySSTable(tableDir).generation, '2');
  fs.rmSync(other, { recursive: true, force: true });
});

test('a generation past what Cassandra reads is never written', async (t) => {
  const s = await setup(['legacy_nb_simple']);
  const tableDir = path.join(s.dataDir, 'legacy_tables', 'legacy_nb_simple');
  for (const f of fs.readdirSync(tableDir)) {
    fs.renameSync(
      path.join(tableDir, f),
      path.join(tableDir, f.replace(/^nb-1-/, 'nb-2147483647-')),
    );
  }
  const before = treeHashes(s.dataDir);
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = {'class': 'Encryptor'};`,
  );
  const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
  t.is(r.code, 1);
  t.regex(
    r.stdout + r.stderr,
    /ERR_TDE_UNSUPPORTED.*2147483648, is past 2147483647.*lower generation/,
  );
  t.deepEqual(treeHashes(s.dataDir), before);
});

test('two runs started together on a stale lock: only one proceeds, every time', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-lock-'));
  const script =
    `
    const { lockDataDirectory } = ` +
    `require(${JSON.stringify(path.join(ROOT, 'dist/rewrite/lock.js'))});
    try { const l = lockDataDirectory(process.argv[1], 'test'); console.log('GOT'); ` +
    `process.stdin.on('end', () => l.release()); process.stdin.resume(); }
    catch (e) { console.log(e.code); }`;
  // Each run reports, then a winner holds the lock until told to let go (its standard input
  // closes), so a run that starts late on a busy machine still meets the lock.
  const start = () => {
    const p = spawn(process.execPath, ['-e', script, dir]);
    const said = new Promise<string>((resolve) => {
      let out = '';
      p.stdout.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve(out.trim());
      });
      p.on('close', () => resolve(out.trim()));
    });
    const closed = new Promise<void>((resolve) => p.on('close', () => resolve()));
    return { p, said, closed };
  };
  for (let i = 0; i < 15; i++) {
    fs.writeFileSync(
      path.join(dir, LOCK_NAME),
      JSON.stringify({ pid: 999999, host: os.hostname(), command: 'dead', since: 'then' }),
    );
    const runs = [start(), start()];
    const results = await Promise.all(runs.map((r) => r.said));
    for (const r of runs) r.p.stdin.end();
    await Promise.all(runs.map((r) => r.closed));
    t.is(results.filter((r) => r === 'GOT').length, 1, `round ${i}: ${results}`);
    t.true(results.includes('ERR_TDE_LOCKED'));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a damaged lock file is reported as such, by upgradesstables and verify alike', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_nb_simple');
  const keys = makeKeySetup();
  const schema = path.join(keys.dir, 's.cql');
  fs.writeFileSync(
    schema,
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = ` +
      `{'class': 'LZ4Compressor'};`,
  );
  const lock = path.join(dataDir, LOCK_NAME);
  for (const text of ['null', '[1, 2]', 'garbage', '{"pid": -1, "host": "h"}', '{"pid": "7"}']) {
    fs.writeFileSync(lock, text);
    const err = t.throws(() => lockDataDirectory(dataDir, 'test'), { code: 'ERR_TDE_LOCKED' });
    t.regex(
      err!.message,
      /is locked, but .*\.sstable-tde\.lock does not say by which process/,
      text,
    );
    const up = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '-a',
      '--config',
      keys.configFile,
    );
    t.is(up.code, 1);
    t.regex(up.stderr, /\[ERR_TDE_LOCKED\].*remove .*\.sstable-tde\.lock/, text);
    const verify = await cli('verify', '--data-dir', dataDir, '--config', keys.configFile);
    t.is(verify.code, 0, verify.stderr);
    t.is(fs.readFileSync(lock, 'utf8'), text, 'a lock is never removed unless its holder is gone');
  }
});

test('a damaged or foreign committed transaction log never removes the live SSTable', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_nb_simple');
  const dir = path.join(dataDir, 'legacy_tables', 'legacy_nb_simple');
  const before = treeHashes(dir);
  const keys = makeKeySetup();
  const schema = path.join(keys.dir, 's.cql');
  fs.writeFileSync(
    schema,
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = ` +
      `{'class': 'LZ4Compressor'};`,
  );
  // A prefix of every nb SSTable, and a new SSTable that is not there.
  for (const remove of ['nb', 'nb-1-big']) {
    const log = path.join(dir, 'sstable-tde-txn-nb-9-big.log');
    fs.writeFileSync(log, `sstable-tde rewrite v1\nadd nb-9-big\nremove ${remove}\ncommit\n`);
    const described = await cli('describe', '--data-dir', dataDir, '--json');
    t.is(described.code, 0, described.stderr);
    t.deepEqual(
      JSON.parse(described.stdout).map((d: { sstable: string }) => d.sstable),
      ['legacy_tables/legacy_nb_simple/nb-1-big'],
      remove,
    );
    const up = await cli(...upgradeCommand(dataDir, schema, keys.configFile));
    t.is(up.code, 0, up.stdout + up.stderr);
    t.regex(up.stdout, /recovered .*sstable-tde-txn-nb-9-big\.log: .*rolled back/);
    t.regex(up.stdout, /unchanged +legacy_tables\/legacy_nb_simple\/nb-1-big/);
    t.deepEqual(treeHashes(dir), before, 'the live SSTable is kept and the log removed');
  }
});

test(
  "new files keep the source SSTable's permission bits (and owner, when run as " + 'root)',
  async (t) => {
    const s = await setup(['legacy_oa_simple']);
    const dir = path.join(s.dataDir, 'legacy_tables', 'legacy_oa_simple');
    for (const f of fs.readdirSync(dir)) {
      fs.chmodSync(path.join(dir, f), 0o600);
      if (process.getuid?.() === 0) fs.chownSync(path.join(dir, f), 65534, 65534);
    }
    const enc = s.schema(
      `ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor'};`,
    );
    t.is((await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc)).code, 0);
    const files = fs.readdirSync(dir);
    t.true(files.every((f) => f.startsWith('oa-2-big-')));
    for (const f of files) {
      const st = fs.statSync(path.join(dir, f));
      t.is(st.mode & 0o777, 0o600, f);
      if (process.getuid?.() === 0) t.is(st.uid, 65534, f);
    }
  },
);

test(
  'a real dse.yaml with settings sstable-tde does not use is accepted; a misspelt one of its ' +
    'own is not',
  async (t) => {
    const s = await setup(['legacy_oa_simple']);
    fs.writeFileSync(
      s.keys.configFile,
      `system_key_directory: ${s.keys.dir}\nmax_memory_to_lock_fraction: 0.20\n` +
        'authentication_options:\n  enabled: false\nnode_health_options:\n  ' +
        'refresh_rate_ms: 60000\n',
    );
    t.is((await s.run('verify', '--data-dir', s.dataDir)).code, 0);
    fs.writeFileSync(s.keys.configFile, `system_key_dir: ${s.keys.dir}\n`);
    const r = await s.run('verify', '--data-dir', s.dataDir);
    t.is(r.code, 1);
    t.regex(r.stderr, /unknown setting "system_key_dir" \(did you mean "system_key_directory"\?\)/);
  },
);

test(
  'a key file replaced under the same name makes "unchanged" SSTables fail with ' +
    'ERR_TDE_WRONG_KEY',
  async (t) => {
    const s = await setup(['legacy_oa_simple']);
    const enc = s.schema(
      `ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor'};`,
    );
    t.is((await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc)).code, 0);
    fs.rmSync(path.join(s.keys.dir, 'system_key'));
    createKeyFile(s.keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
    t.is(r.code, 1);
    t.regex(r.stdout, /FAILED .*ERR_TDE_WRONG_KEY/);
  },
);

test('a FIFO in place of the key file is refused at once instead of blocking', async (t) => {
  const s = await setup(['legacy_oa_simple']);
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor'};`,
  );
  fs.rmSync(path.join(s.keys.dir, 'system_key'));
  const { execFileSync } = await import('node:child_process');
  execFileSync('mkfifo', ['-m', '600', path.join(s.keys.dir, 'system_key')]);
  const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
  t.is(r.code, 1);
  t.regex(r.stdout, /ERR_TDE_KEY_FILE.*not a regular file \(it is a pipe\)/);
});

test(
  'a damaged TOC.txt or a listed component that ' + 'is missing is reported and never carried over',
  async (t) => {
    const s = await setup(['legacy_nb_clust', 'legacy_me_simple']);
    fs.writeFileSync(
      path.join(s.dataDir, 'legacy_tables', 'legacy_nb_clust', 'nb-1-big-TOC.txt'),
      Buffer.alloc(92),
    );
    fs.rmSync(path.join(s.dataDir, 'legacy_tables', 'legacy_me_simple', 'me-1-big-Index.db'));
    const v = await s.run('verify', '--data-dir', s.dataDir);
    t.is(v.code, 1);
    t.regex(v.stdout, /ERR_TDE_CORRUPT_TOC.*nb-1-big-TOC\.txt is damaged/);
    t.regex(v.stdout, /ERR_TDE_MISSING_COMPONENT.*lacks Index\.db, which its TOC\.txt lists/);
    const before = treeHashes(s.dataDir);
    const enc = s.schema(
      ['legacy_nb_clust', 'legacy_me_simple']
        .map((tb) => `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': 'Encryptor'};`)
        .join('\n'),
    );
    const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
    t.is(r.code, 1);
    t.regex(r.stdout, /0 rewritten.*2 failed/s);
    t.deepEqual(treeHashes(s.dataDir), before);
  },
);

test('Ctrl-C rolls back the SSTable in progress, removes the lock and exits 130', async (t) => {
  const s = await setup(['legacy_nb_clust', 'legacy_me_clust']);
  const enc = s.schema(
    ['legacy_nb_clust', 'legacy_me_clust']
      .map(
        (tb) =>
          `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': ` +
          `'EncryptingLZ4Compressor', 'chunk_length_kb': 4};`,
      )
      .join('\n'),
  );
  const before = treeHashes(s.dataDir);
  const r = await cliProcess(
    ['upgradesstables', '--data-dir', s.dataDir, '--schema', enc, '--config', s.keys.configFile],
    { SSTABLE_TDE_INTERRUPT_AT: 'data-writing' },
  );
  t.is(r.code, 130, r.stderr);
  t.regex(r.stderr, /SIGINT: rolling back the SSTable in progress \(press Ctrl-C again/);
  // The SSTable rolled back is not a failure to fix; the interrupt is reported on its own.
  t.notRegex(r.stderr, /could not be rewritten/);
  t.regex(
    r.stdout,
    /^cancelled  legacy_tables\/legacy_me_clust\/me-1-big: interrupted and rolled/m,
  );
  t.notRegex(r.stdout, /FAILED/);
  t.regex(r.stderr, /interrupted; run the same command again/);
  t.deepEqual(treeHashes(s.dataDir), before, 'nothing changed, nothing left behind, lock removed');
});

test(
  'NoPadding with ECB or CBC is refused as a ' + 'table option, with the padding to use instead',
  async (t) => {
    const s = await setup(['legacy_oa_simple']);
    const r = await s.run(
      'upgradesstables',
      '--data-dir',
      s.dataDir,
      '--schema',
      s.schema(
        `ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor', ` +
          `'cipher_algorithm': 'AES/CBC/NoPadding'};`,
      ),
    );
    t.is(r.code, 1);
    t.regex(
      r.stderr + r.stdout,
      /AES\/CBC\/NoPadding cannot encrypt SSTable chunks.*use AES\/CBC\/PKCS5Padding/,
    );
  },
);

test('the rewritten data is still identical after all this hardening (sanity)', async (t) => {
  const s = await setup(['legacy_da_clust']);
  const dir = path.join(s.dataDir, 'legacy_tables', 'legacy_da_clust');
  const original = await readAll(onlySSTable(dir));
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_da_clust WITH compression = {'class': ` +
      `'EncryptingDeflateCompressor'};`,
  );
  t.is((await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc)).code, 0);
  t.true((await readAll(onlySSTable(dir), s.keys.config)).equals(original));
});

test(
  'a table with a Cassandra transaction log of ' + 'its own is refused until Cassandra settles it',
  async (t) => {
    const s = await setup(['legacy_nb_clust']);
    const dir = path.join(s.dataDir, 'legacy_tables', 'legacy_nb_clust');
    fs.writeFileSync(
      path.join(dir, 'nb_txn_compaction_0d1e2f30-0000-11ee-8000-000000000000.log'),
      'ADD:[...]\n',
    );
    const before = treeHashes(s.dataDir);
    const r = await s.run(
      'upgradesstables',
      '--data-dir',
      s.dataDir,
      '--schema',
      s.schema(
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
      ),
    );
    t.is(r.code, 1);
    t.regex(
      r.stdout,
      new RegExp(
        /Cassandra transaction log\(s\) nb_txn_compaction_.*start Cassandra once \(or run /.source +
          /"sstableutil --cleanup"\)/.source,
      ),
    );
    t.deepEqual(treeHashes(s.dataDir), before);
  },
);

test(
  'encrypting a table that has snapshots, backups or index SSTables warns that they keep the ' +
    'old settings',
  async (t) => {
    const s = await setup(['legacy_me_simple']);
    const dir = path.join(s.dataDir, 'legacy_tables', 'legacy_me_simple');
    fs.mkdirSync(path.join(dir, 'snapshots', 'before'), { recursive: true });
    fs.copyFileSync(
      path.join(dir, 'me-1-big-Data.db'),
      path.join(dir, 'snapshots', 'before', 'me-1-big-Data.db'),
    );
    // A legacy secondary index's SSTables, which are not rewritten: said, never silent.
    fs.mkdirSync(path.join(dir, '.legacy_me_simple_idx'));
    fs.copyFileSync(
      path.join(dir, 'me-1-big-Data.db'),
      path.join(dir, '.legacy_me_simple_idx', 'me-1-big-Data.db'),
    );
    const r = await s.run(
      'upgradesstables',
      '--data-dir',
      s.dataDir,
      '--schema',
      s.schema(
        `ALTER TABLE legacy_tables.legacy_me_simple WITH compression = {'class': 'Encryptor'};`,
      ),
    );
    t.is(r.code, 0);
    t.regex(
      r.stderr,
      new RegExp(
        /warning: table legacy_tables\.legacy_me_simple: .*snapshots still hold copies /.source +
          /.*nodetool clearsnapshot/.source,
      ),
    );
    t.regex(
      r.stderr,
      new RegExp(
        'warning: table legacy_tables\\.legacy_me_simple: the secondary-index SSTables in ' +
          '.*\\.legacy_me_simple_idx are not rewritten .*nodetool rebuild_index legacy_tables ' +
          'legacy_me_simple INDEX',
      ),
    );
  },
);

test(
  'an "unchanged" SSTable without a key check value (as DSE writes them) is tried with the ' +
    'key',
  async (t) => {
    const s = await setup(['legacy_nb_clust']);
    const enc = s.schema(
      `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
    );
    t.is((await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc)).code, 0);
    // Drop the fingerprint, as a DSE-written SSTable would lack it, then replace the key.
    const files = onlySSTable(path.join(s.dataDir, 'legacy_tables', 'legacy_nb_clust'));
    const ci = path.join(files.dir, `nb-${files.generation}-big-CompressionInfo.db`);
    const info = parseCompressionInfo(fs.readFileSync(ci), ci, true);
    delete info.options.key_check_value;
    fs.writeFileSync(ci, serializeCompressionInfo(info, true));
    fs.rmSync(path.join(s.keys.dir, 'system_key'));
    createKeyFile(s.keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const r = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
    t.is(r.code, 1);
    t.regex(r.stdout, /FAILED .*ERR_TDE_DECRYPT_FAILED/);
  },
);

test('verify and describe with nothing to look at say so and exit 1', async (t) => {
  const s = await setup(['legacy_nb_clust']);
  const tooDeep = path.join(s.dataDir, 'legacy_tables');
  const v = await s.run('verify', '--data-dir', tooDeep);
  t.is(v.code, 1);
  t.regex(
    v.stderr,
    /found no SSTable under .*: is --data-dir the directory that holds the keyspace directories/,
  );
  t.is((await cli('describe', '--data-dir', tooDeep)).code, 1);
  const bad = await cli('describe', '--data-dir', s.dataDir, '--config', '/nonexistent/dse.yaml');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /dse\.yaml.*does not exist/);
  // A file given as the data directory is called that, not a lock file that cannot be read.
  const file = path.join(s.dataDir, 'legacy_tables', 'legacy_nb_clust', 'nb-1-big-TOC.txt');
  const notDir = await s.run('verify', '--data-dir', file);
  t.is(notDir.code, 1);
  t.regex(notDir.stderr, /ERR_TDE_DATA_DIR.*nb-1-big-TOC\.txt is not a directory/);
  t.notRegex(notDir.stderr, /lock/);
});

test('a value that looks like key material is never quoted back in an error', async (t) => {
  const s = await setup(['legacy_nb_clust']);
  const key = 'A5daL8yYBrYaikBkNUWO9A==';
  const r = await s.run(
    'upgradesstables',
    '--data-dir',
    s.dataDir,
    '--schema',
    s.schema(
      `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor', ` +
        `'cipher_algorithm': '${key}'};`,
    ),
  );
  t.is(r.code, 1);
  t.regex(r.stdout + r.stderr, /looks like key material, not shown/);
  t.false((r.stdout + r.stderr).includes(key));
});

test('verify reports a table directory it cannot list and goes on with the others', async (t) => {
  const dataDir = makeDataDir((c) => ['legacy_nb_clust', 'legacy_nb_simple'].includes(c.table));
  const keys = makeKeySetup();
  const blocked = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');
  t.true(fs.statSync(blocked).isDirectory());

  // Root reads any directory whatever its mode, so the refusal is made here, as the kernel makes
  // it for a user without read permission.
  // The module object itself: the modules under test read readdirSync from it at each call.
  const nodeFs: typeof fs = require('node:fs');
  const readdirSync = nodeFs.readdirSync;
  const patched = ((dir: fs.PathLike, ...rest: unknown[]) => {
    if (path.resolve(String(dir)) === blocked) {
      throw Object.assign(new Error(`EACCES: permission denied, scandir '${dir}'`), {
        code: 'EACCES',
        errno: -13,
        syscall: 'scandir',
        path: String(dir),
      });
    }
    return (readdirSync as (...a: unknown[]) => unknown)(dir, ...rest);
  }) as typeof fs.readdirSync;
  nodeFs.readdirSync = patched;
  let report;
  try {
    report = await verifyDataDirectory({ dataDir, config: keys.config });
  } finally {
    nodeFs.readdirSync = readdirSync;
  }

  t.is(report.faults, 1);
  const names = report.sstables.map((s) => s.sstable);
  t.true(names.includes('legacy_tables.legacy_nb_clust'), names.join(', '));
  const failed = report.sstables.find((s) => s.sstable === 'legacy_tables.legacy_nb_clust');
  t.is(failed?.faults[0].file, blocked);
  t.regex(failed?.faults[0].message ?? '', /legacy_nb_clust/);
  // The other table was still read through, chunk by chunk, without a fault.
  const other = report.sstables.filter((s) => s.sstable.includes('nb-'));
  t.true(other.length >= 1);
  t.true(other.every((s) => s.faults.length === 0 && s.chunks > 0));
});

test(
  'a damaged transaction log beside the SSTable it names ' + 'removes nothing and says why',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_nb_simple');
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_nb_simple');
    const keys = makeKeySetup();
    const schema = path.join(keys.dir, 's.cql');
    fs.writeFileSync(
      schema,
      'ALTER TABLE legacy_tables.legacy_nb_simple ' +
        "WITH compression = {'class': 'DeflateCompressor'};",
    );
    // A copy of the SSTable as nb-9-big, and a log for it whose first line was overwritten.
    for (const f of fs.readdirSync(dir)) {
      fs.copyFileSync(path.join(dir, f), path.join(dir, f.replace(/^nb-1-big-/, 'nb-9-big-')));
    }
    const log = path.join(dir, 'sstable-tde-txn-nb-9-big.log');
    fs.writeFileSync(log, 'Xstable-tde rewrite v1\nadd nb-9-big\nremove nb-1-big\ncommit\n');
    const before = treeHashes(dir);

    const up = await cli(...upgradeCommand(dataDir, schema, keys.configFile));
    t.is(up.code, 1, up.stdout + up.stderr);
    t.regex(up.stdout + up.stderr, /damaged transaction log sstable-tde-txn-nb-9-big\.log/);
    t.regex(up.stdout + up.stderr, /nothing was removed/);
    t.deepEqual(treeHashes(dir), before, 'every file and the log are as they were');
    // Both SSTables count as live until the operator settles it, so verify reads both.
    const verify = await cli(
      'verify',
      '--data-dir',
      dataDir,
      '--config',
      keys.configFile,
      '--json',
    );
    const sstables = JSON.parse(verify.stdout).sstables.map((s: { sstable: string }) => s.sstable);
    t.is(sstables.length, 2, verify.stdout);

    // A log torn while first written, before its SSTable was started, is simply rolled back.
    for (const f of fs.readdirSync(dir).filter((n) => n.startsWith('nb-9-big-'))) {
      fs.rmSync(path.join(dir, f));
    }
    fs.writeFileSync(log, 'sstable-tde rew');
    const again = await cli(...upgradeCommand(dataDir, schema, keys.configFile));
    t.is(again.code, 0, again.stdout + again.stderr);
    t.regex(again.stdout, /rolled back/);
    t.false(fs.existsSync(log));
  },
);

test('control characters in a directory name are shown escaped', async (t) => {
  const s = await setup(['legacy_nb_simple']);
  const ks = path.join(s.dataDir, 'legacy_tables');
  fs.renameSync(path.join(ks, 'legacy_nb_simple'), path.join(ks, 'tb\nx\x1b[31m'));
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = {'class': 'Encryptor'};`,
  );
  const up = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
  t.regex(
    up.stdout,
    new RegExp(
      String.raw`^skipped {4}legacy_tables/tb\\nx\\x1b\[31m/nb-1-big: ` +
        String.raw`table legacy_tables\.tb\\nx\\x1b\[31m is not`,
      'm',
    ),
  );
  t.false(up.stdout.includes('\x1b'));
  const v = await s.run('verify', '--data-dir', s.dataDir);
  t.is(v.code, 0, v.stderr);
  t.regex(v.stdout, /^ok +legacy_tables\/tb\\nx\\x1b\[31m\/nb-1-big: /m);
});

test('a run without a progress bar reports each SSTable as it ends', async (t) => {
  const s = await setup(['legacy_nb_clust', 'legacy_me_simple', 'legacy_oa_simple']);
  // legacy_me_simple ends first (skipped at planning), legacy_nb_clust next (rewritten); the run
  // is killed while legacy_oa_simple is being rewritten.
  const enc = s.schema(
    ['legacy_nb_clust', 'legacy_oa_simple']
      .map((tb) => `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': 'Encryptor'};`)
      .join('\n'),
  );
  const killed = await cliProcess(
    ['upgradesstables', '--data-dir', s.dataDir, '--schema', enc, '--config', s.keys.configFile],
    { SSTABLE_TDE_CRASH_AT: 'data-written', SSTABLE_TDE_CRASH_AFTER: '1' },
  );
  t.is(killed.signal, 'SIGKILL', killed.stderr);
  t.regex(killed.stdout, /^skipped {4}legacy_tables\/legacy_me_simple\/me-1-big: /m);
  t.regex(killed.stdout, /^rewritten  legacy_tables\/legacy_nb_clust\/nb-1-big -> nb-2-big /m);
  t.notRegex(killed.stdout, /legacy_oa_simple/);
});

test('a symbolic link or a FIFO in place of a lock file is refused, not waited on', async (t) => {
  const s = await setup(['legacy_nb_simple']);
  const enc = s.schema(
    `ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = {'class': 'Encryptor'};`,
  );
  const before = treeHashes(s.dataDir);
  const dataLock = path.join(s.dataDir, LOCK_NAME);
  fs.symlinkSync('/nonexistent/lock', dataLock);
  const linked = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
  t.is(linked.code, 1);
  t.regex(linked.stderr, /ERR_TDE_LOCKED.*\.sstable-tde\.lock is a symbolic link, not a lock file/);
  fs.rmSync(dataLock);

  const tableLock = path.join(s.dataDir, 'legacy_tables', 'legacy_nb_simple', LOCK_NAME);
  const { execFileSync } = await import('node:child_process');
  execFileSync('mkfifo', [tableLock]);
  const fifo = await s.run('upgradesstables', '--data-dir', s.dataDir, '--schema', enc);
  t.is(fifo.code, 1);
  t.regex(fifo.stderr, /ERR_TDE_LOCKED.*legacy_nb_simple\/\.sstable-tde\.lock is a special file/);
  // verify is not held up by it either.
  t.is((await s.run('verify', '--data-dir', s.dataDir)).code, 0);
  fs.rmSync(tableLock);
  t.deepEqual(treeHashes(s.dataDir), before, 'nothing changed, no lock or private file left');
});
