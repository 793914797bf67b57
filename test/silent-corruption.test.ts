/**
 * Silent corruption on the way to disk: a write that stores one byte other than it was given
 * and reports success, as a faulty disk, driver or memory would (made by test/crash-hook.js in a
 * real rewrite). A rewrite must catch it before its commit, with a coded error that says what
 * did not verify, leave the original SSTable byte for byte as it was and leave no new file; a
 * rerun without the fault then succeeds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { createKeyFile } from '../src/keys/key-file';
import {
  cliProcess,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  ROOT,
  treeHashes,
  upgradeCommand,
} from './helpers';

const DID_NOT_VERIFY = /ERR_TDE_REWRITE_FAILED.*did not verify \(.*\); .* is left as it was/;
const LOG_UNREADABLE = /ERR_TDE_REWRITE_FAILED.*transaction log .*does not read back as written/;

interface Case {
  label: string;
  /** The first write whose line matches is garbled (after `skip` matching ones). */
  match: string;
  skip?: number;
  /** Other hook settings: links refused, so that components are copied. */
  env?: Record<string, string>;
  message: RegExp;
  /** What the message must name: the file found damaged. */
  names: RegExp;
}

const CASES: Case[] = [
  {
    label: 'a Data.db write',
    match: String.raw`^handle\.writev .*-Data\.db$`,
    message: DID_NOT_VERIFY,
    names: /nb-2-big-Data\.db: chunk \d+/,
  },
  {
    label: 'CompressionInfo.db',
    match: String.raw`^handle\.writeFile .*-CompressionInfo\.db$`,
    message: DID_NOT_VERIFY,
    names: /nb-2-big-CompressionInfo\.db does not read back as written: byte \d+ differs/,
  },
  {
    label: 'Digest.crc32',
    match: String.raw`^handle\.writeFile .*-Digest\.crc32$`,
    message: DID_NOT_VERIFY,
    names: /nb-2-big-Digest\.crc32 does not read back as written/,
  },
  {
    label: 'Index.db (encrypted)',
    match: String.raw`^handle\.write.* .*-Index\.db$`,
    message: DID_NOT_VERIFY,
    names: /nb-2-big-Index\.db: page \d+/,
  },
  {
    label: 'TOC.txt',
    match: String.raw`^write .*-TOC\.txt$`,
    message: DID_NOT_VERIFY,
    names: /nb-2-big-TOC\.txt does not read back as written/,
  },
  {
    label: 'a copied Filter.db (hard links refused)',
    match: String.raw`^copyFile .*-Filter\.db$`,
    env: { SSTABLE_TDE_FAIL_MATCH: '^link legacy_tables/', SSTABLE_TDE_FAIL_CODE: 'EPERM' },
    message: DID_NOT_VERIFY,
    names: /nb-2-big-Filter\.db does not read back as a copy of .*nb-1-big-Filter\.db/,
  },
  {
    label: "the transaction log's first record",
    match: String.raw`^write .*sstable-tde-txn-.*\.log$`,
    message: LOG_UNREADABLE,
    names: /after its start; nothing was written/,
  },
  {
    label: "the transaction log's commit record",
    match: String.raw`^write .*sstable-tde-txn-.*\.log$`,
    skip: 1,
    message: LOG_UNREADABLE,
    names: /after its commit record; the rewrite is undone/,
  },
];

for (const c of CASES) {
  test(`upgradesstables: ${c.label} with one byte changed is caught before the commit`, async (t) => {
    const dataDir = makeDataDir((x) => x.table === 'legacy_nb_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const schema = path.join(keys.dir, 'schema.cql');
    fs.writeFileSync(
      schema,
      'ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = ' +
        "{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', " +
        "'secret_key_strength': 128, 'chunk_length_kb': 4};\n",
    );
    const tableDir = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');
    const before = treeHashes(dataDir);
    const original = await readAll(onlySSTable(tableDir));
    const args = upgradeCommand(dataDir, schema, keys.configFile);

    const run = await cliProcess(args, {
      NODE_OPTIONS: `--require=${path.join(ROOT, 'test', 'crash-hook.js')}`,
      SSTABLE_TDE_FS_ROOT: dataDir,
      SSTABLE_TDE_GARBLE_MATCH: c.match,
      SSTABLE_TDE_GARBLE_SKIP: String(c.skip ?? 0),
      ...c.env,
    });
    const output = run.stdout + run.stderr;
    t.is(run.code, 1, output);
    t.regex(output, c.message);
    t.regex(output, c.names);
    t.regex(output, /check the system log/);
    t.notRegex(output, /restore|backup|--ignore-digest/i, 'the original needs no restoring');
    t.notRegex(output, /\n +at /, 'no stack trace');
    t.deepEqual(treeHashes(dataDir), before, 'the data directory is as it was');

    const rerun = await cliProcess(args);
    t.is(rerun.code, 0, rerun.stdout + rerun.stderr);
    t.true((await readAll(onlySSTable(tableDir), keys.config)).equals(original));
  });
}
