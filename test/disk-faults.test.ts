/**
 * Real disk faults during a rewrite, made for real rather than simulated:
 *
 * - a full file system: a small tmpfs mounted by the test (when it runs as root and may mount),
 *   filled to leave a few sizes of free space, so the rewrite runs out at different steps;
 * - a file-size limit (`ulimit -f`, which makes writes fail with EFBIG), which needs no root;
 * - an old component that cannot be removed after the commit (an immutable file, `chattr +i`).
 *
 * Each must give a clear coded error and lose nothing: before the commit the originals are
 * byte-identical and nothing new is left; after it the new SSTable is kept, and a rerun finishes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import { createKeyFile } from '../src/keys/key-file';
import {
  cli,
  cliProcess,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  ROOT,
  treeHashes,
} from './helpers';

const TABLES = ['legacy_nb_clust', 'legacy_me_clust'];
// Encryptor stores chunks uncompressed: each new Data.db is about 330 KiB, where the old ones
// (LZ4) are under 10 KiB, so a rewrite needs far more room than the data it starts from.
const SCHEMA = TABLES.map(
  (t) =>
    `ALTER TABLE legacy_tables.${t} WITH compression = ` +
    "{'class': 'Encryptor', 'chunk_length_kb': 16};",
).join('\n');

function keys() {
  const k = makeKeySetup();
  createKeyFile(k.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const schema = path.join(k.dir, 'schema.cql');
  fs.writeFileSync(schema, SCHEMA);
  return { ...k, schema };
}

async function originalsOf(dataDir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const t of TABLES)
    out.set(t, await readAll(onlySSTable(path.join(dataDir, 'legacy_tables', t))));
  return out;
}

async function checkDone(
  t: any,
  dataDir: string,
  k: ReturnType<typeof keys>,
  originals: Map<string, Buffer>,
) {
  const verify = await cli('verify', '--data-dir', dataDir, '--config', k.configFile);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  for (const table of TABLES) {
    const dir = path.join(dataDir, 'legacy_tables', table);
    const only = onlySSTable(dir);
    t.deepEqual(
      fs.readdirSync(dir).filter((f) => !f.startsWith(`${only.version}-${only.generation}-`)),
      [],
    );
    t.true(
      (await readAll(only, k.config)).equals(originals.get(table)!),
      `${table}'s data changed`,
    );
  }
  const described = JSON.parse((await cli('describe', '--data-dir', dataDir, '--json')).stdout);
  t.deepEqual(
    described.map((d: { compressor: string }) => d.compressor),
    ['Encryptor', 'Encryptor'],
  );
}

/** Whether this process may mount a tmpfs (root, and a kernel and container that allow it). */
function canMount(): boolean {
  if (process.getuid?.() !== 0) return false;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-mnt-'));
  try {
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status !== 0)
      return false;
    spawnSync('umount', [dir]);
    return true;
  } finally {
    fs.rmdirSync(dir);
  }
}

const mountTest = canMount() ? test : test.skip;
mountTest(
  'a full file system (tmpfs) at several steps: ERR_TDE_DISK_FULL, originals intact, nothing ' +
    'left; a rerun with space succeeds',
  async (t) => {
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-mnt-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0755', 'tmpfs', mnt]);
    t.teardown(() => {
      spawnSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    });
    const dataDir = path.join(mnt, 'data');
    fs.cpSync(
      makeDataDir((c) => TABLES.includes(c.table)),
      dataDir,
      { recursive: true },
    );
    const k = keys();
    const originals = await originalsOf(dataDir);
    const before = treeHashes(dataDir);
    const filler = path.join(mnt, 'filler');

    // Free space left: none (the lock cannot be written), a few pages (the transaction log fits,
    // the new files do not), and more (the new index components fit, Data.db does not).
    for (const free of [0, 8192, 65536, 200 * 1024]) {
      const st = fs.statfsSync(mnt);
      fs.writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - free)));
      const r = await cliProcess([
        'upgradesstables',
        '--data-dir',
        dataDir,
        '--schema',
        k.schema,
        '--config',
        k.configFile,
      ]);
      const output = r.stdout + r.stderr;
      t.is(r.code, 1, `${free} bytes free: ${output}`);
      t.regex(
        output,
        /\[ERR_TDE_DISK_FULL\]:? cannot .*: the disk is full: free space and run the command again/,
        `${free} bytes free`,
      );
      t.notRegex(output, /ERR_TDE_INTERNAL|ERR_TDE_REWRITE_FAILED|\n +at /);
      t.deepEqual(
        treeHashes(dataDir),
        before,
        `${free} bytes free: the originals are untouched and nothing is left`,
      );
      t.is((await cli('verify', '--data-dir', dataDir, '--config', k.configFile)).code, 0);
      fs.rmSync(filler);
    }

    const r = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      k.schema,
      '--config',
      k.configFile,
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    await checkDone(t, dataDir, k, originals);
  },
);

test(
  'a file-size limit (ulimit -f, EFBIG): ERR_TDE_DISK_FULL naming the limit, originals ' +
    'intact, nothing left',
  async (t) => {
    const dataDir = makeDataDir((c) => TABLES.includes(c.table));
    const k = keys();
    const originals = await originalsOf(dataDir);
    const before = treeHashes(dataDir);

    // 128 KiB: the old files and the new index components fit, the new Data.db does not. Node
    // ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process.
    const args = [
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      k.schema,
      '--config',
      k.configFile,
    ];
    const r = spawnSync(
      'bash',
      [
        '-c',
        'ulimit -f 128 && exec "$0" --import=tsx "$@"',
        process.execPath,
        path.join(ROOT, 'src/cli/run.ts'),
        ...args,
      ],
      { encoding: 'utf8' },
    );
    const output = r.stdout + r.stderr;
    t.is(r.status, 1, output);
    t.regex(
      output,
      new RegExp(
        '\\[ERR_TDE_DISK_FULL\\] cannot write .*-big-\\w+\\.db: ' +
          'the file is larger than this process may write \\(check ulimit -f\\)',
      ),
    );
    t.notRegex(output, /ERR_TDE_INTERNAL|ERR_TDE_REWRITE_FAILED|\n +at /);
    t.deepEqual(treeHashes(dataDir), before, 'the originals are untouched and nothing is left');

    const again = await cli(...args);
    t.is(again.code, 0, again.stdout + again.stderr);
    await checkDone(t, dataDir, k, originals);
  },
);

/** Whether files here can be made immutable (root, on a file system with the attribute). */
function canChattr(): boolean {
  if (process.getuid?.() !== 0) return false;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-attr-'));
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, '');
  try {
    if (spawnSync('chattr', ['+i', file]).status !== 0) return false;
    spawnSync('chattr', ['-i', file]);
    return true;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const attrTest = canChattr() ? test : test.skip;
attrTest(
  'an old file that cannot be removed after the commit (chattr +i) keeps the new SSTable; a ' +
    'rerun finishes',
  async (t) => {
    const dataDir = makeDataDir((c) => TABLES.includes(c.table));
    const k = keys();
    const originals = await originalsOf(dataDir);
    const stuck = path.join(dataDir, 'legacy_tables', 'legacy_me_clust', 'me-1-big-Data.db');
    execFileSync('chattr', ['+i', stuck]);
    t.teardown(() => spawnSync('chattr', ['-i', stuck]));

    const r = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      k.schema,
      '--config',
      k.configFile,
    );
    t.is(r.code, 1);
    t.regex(
      r.stdout,
      new RegExp(
        'FAILED .*me-1-big: \\[ERR_TDE_IO\\] .*me-2-big replaces .*me-1-big \\(the commit is ' +
          'recorded in .*sstable-tde-txn-me-2-big\\.log\\), but finishing the rewrite failed: ' +
          'cannot remove .*me-1-big-Data\\.db: operation not permitted.*' +
          'immutable \\(lsattr\\)\\. ' +
          'The data is safe',
      ),
    );
    t.regex(r.stdout, /rewritten +legacy_tables\/legacy_nb_clust\/nb-1-big -> nb-2-big/);

    // Every reader here already sees only the new SSTable, complete, with the same data.
    const verify = await cli('verify', '--data-dir', dataDir, '--config', k.configFile, '--json');
    t.is(verify.code, 0, verify.stdout);
    t.deepEqual(
      JSON.parse(verify.stdout)
        .sstables.map((s: { sstable: string }) => s.sstable)
        .sort(),
      ['legacy_tables/legacy_me_clust/me-2-big', 'legacy_tables/legacy_nb_clust/nb-2-big'],
    );

    execFileSync('chattr', ['-i', stuck]);
    const again = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      k.schema,
      '--config',
      k.configFile,
    );
    t.is(again.code, 0, again.stdout + again.stderr);
    t.regex(again.stdout, /recovered .*completed/);
    await checkDone(t, dataDir, k, originals);
  },
);
