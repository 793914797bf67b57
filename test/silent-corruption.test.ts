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
} from './helpers';

for (const [label, match] of [
  ['a Data.db write', String.raw`^handle\.writev .*-Data\.db$`],
  ['CompressionInfo.db', String.raw`^handle\.writeFile .*-CompressionInfo\.db$`],
  ['Digest.crc32', String.raw`^handle\.writeFile .*-Digest\.crc32$`],
  ['Index.db (encrypted)', String.raw`^handle\.write.* .*-Index\.db$`],
] as const) {
  test(`upgradesstables: ${label} stored with one byte changed is caught before the commit`, async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_nb_clust');
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
    const args = [
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      keys.configFile,
    ];

    const run = await cliProcess(args, {
      NODE_OPTIONS: `--require=${path.join(ROOT, 'test', 'crash-hook.js')}`,
      SSTABLE_TDE_FS_ROOT: dataDir,
      SSTABLE_TDE_GARBLE_MATCH: match,
    });
    const output = run.stdout + run.stderr;
    t.is(run.code, 1, output);
    t.regex(output, /ERR_TDE_REWRITE_FAILED/);
    t.regex(output, /did not verify/);
    t.regex(output, /legacy_nb_clust.*is left as it was/);
    t.regex(output, /check the system log/);
    t.notRegex(output, /restore|backup|--ignore-digest/i, 'the original needs no restoring');
    t.notRegex(output, /\n +at /, 'no stack trace');
    t.deepEqual(treeHashes(dataDir), before, 'the data directory is as it was');

    const rerun = await cliProcess(args);
    t.is(rerun.code, 0, rerun.stdout + rerun.stderr);
    t.true((await readAll(onlySSTable(tableDir), keys.config)).equals(original));
  });
}
