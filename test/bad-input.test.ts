/**
 * Damaged files, wrong and missing keys: each gives a clear error naming the file and what to
 * do, a non-zero exit, and leaves the source SSTable exactly as it was.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';

import { createKeyFile } from '../src/keys/key-file';
import { parseCompressionInfo, serializeCompressionInfo } from '../src/sstable/compression-info';
import { parseCrcDb } from '../src/sstable/crc-db';
import { SSTableReader } from '../src/sstable/reader';
import { SSTableDataWriter } from '../src/sstable/writer';
import { cli, makeDataDir, makeKeySetup, onlySSTable, treeHashes } from './helpers';

const ENCRYPT =
  `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': ` +
  `'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', 'secret_key_strength': ` +
  `128};`;
const DECRYPT =
  `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': ` + `'LZ4Compressor'};`;

/** An encrypted copy of legacy_nb_clust, with its key setup and schema files. */
async function encryptedTable() {
  const dataDir = makeDataDir((c) => c.table === 'legacy_nb_clust');
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const encrypt = path.join(keys.dir, 'encrypt.cql');
  const decrypt = path.join(keys.dir, 'decrypt.cql');
  fs.writeFileSync(encrypt, ENCRYPT);
  fs.writeFileSync(decrypt, DECRYPT);
  const r = await cli(
    'upgradesstables',
    '--data-dir',
    dataDir,
    '--schema',
    encrypt,
    '--config',
    keys.configFile,
  );
  if (r.code !== 0) throw new Error(r.stderr);
  const dir = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');
  return { dataDir, keys, decrypt, dir, files: onlySSTable(dir) };
}

async function expectFailureLeavesSource(
  t: any,
  setup: Awaited<ReturnType<typeof encryptedTable>>,
  code: string,
  mentions: RegExp[],
) {
  const before = treeHashes(setup.dataDir);
  const verify = await cli(
    'verify',
    '--data-dir',
    setup.dataDir,
    '--config',
    setup.keys.configFile,
  );
  t.is(verify.code, 1);
  t.true(verify.stdout.includes(`[${code}]`), verify.stdout);
  const up = await cli(
    'upgradesstables',
    '--data-dir',
    setup.dataDir,
    '--schema',
    setup.decrypt,
    '--config',
    setup.keys.configFile,
  );
  t.is(up.code, 1);
  t.true(up.stdout.includes(`FAILED`) && up.stdout.includes(`[${code}]`), up.stdout);
  for (const m of mentions) t.regex(up.stdout, m);
  t.deepEqual(
    treeHashes(setup.dataDir),
    before,
    'the source SSTable must be untouched and nothing left behind',
  );
}

test('a wrong key is named as such, with the key file to restore', async (t) => {
  const s = await encryptedTable();
  fs.renameSync(path.join(s.keys.dir, 'system_key'), path.join(s.keys.dir, 'system_key.old'));
  createKeyFile(s.keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  await expectFailureLeavesSource(t, s, 'ERR_TDE_WRONG_KEY', [
    /nb-2-big-Data\.db/,
    /restore the key file system_key/,
  ]);
});

test(
  'a missing key file says to restore it for ' + 'existing data, or how to make one for new data',
  async (t) => {
    const s = await encryptedTable();
    fs.rmSync(path.join(s.keys.dir, 'system_key'));
    await expectFailureLeavesSource(t, s, 'ERR_TDE_KEY_FILE', [
      /does not exist/,
      /already encrypted under it can be read only with that same file: restore it from a backup/,
      /system_key_directory/,
      /To encrypt new data under a new key.*createsystemkey/,
    ]);
  },
);

test('a key file others can read is refused with the chmod that fixes it', async (t) => {
  const s = await encryptedTable();
  fs.chmodSync(path.join(s.keys.dir, 'system_key'), 0o644);
  await expectFailureLeavesSource(t, s, 'ERR_TDE_KEY_FILE', [/chmod 600/]);
});

test(
  'a flipped byte in an encrypted chunk is caught by the chunk checksum, naming chunk and ' +
    'offset',
  async (t) => {
    const s = await encryptedTable();
    const data = path.join(s.dir, 'nb-2-big-Data.db');
    const buf = fs.readFileSync(data);
    buf[40] ^= 0x01;
    fs.writeFileSync(data, buf);
    await expectFailureLeavesSource(t, s, 'ERR_TDE_CHUNK_CHECKSUM', [
      /chunk 0 at offset 0/,
      /nb-2-big-Data\.db/,
    ]);
  },
);

test(
  'an altered chunk with a recomputed checksum fails decryption as a damaged chunk, not as ' +
    'wrong data',
  async (t) => {
    const s = await encryptedTable();
    const data = path.join(s.dir, 'nb-2-big-Data.db');
    const buf = fs.readFileSync(data);
    // Alter the last cipher block of chunk 0 (it holds the padding) and fix up its CRC.
    const ci = fs.readFileSync(path.join(s.dir, 'nb-2-big-CompressionInfo.db'));
    const offsets = ci.subarray(ci.length - 8 * 21);
    const end = Number(offsets.readBigInt64BE(8)) - 4;
    buf[end - 1] ^= 0x55;
    buf.writeUInt32BE(zlib.crc32(buf.subarray(0, end)), end);
    fs.writeFileSync(data, buf);
    await expectFailureLeavesSource(t, s, 'ERR_TDE_CORRUPT_CHUNK', [/chunk 0/, /damaged/]);
  },
);

test('a truncated CompressionInfo.db is reported with its file name', async (t) => {
  const s = await encryptedTable();
  const file = path.join(s.dir, 'nb-2-big-CompressionInfo.db');
  fs.truncateSync(file, fs.statSync(file).size - 5);
  await expectFailureLeavesSource(t, s, 'ERR_TDE_CORRUPT_COMPRESSION_INFO', [
    /nb-2-big-CompressionInfo\.db/,
    /truncated/,
  ]);
});

test('a Data.db cut short is named by the chunk it ends in, not the last one listed', async (t) => {
  const s = await encryptedTable();
  const data = path.join(s.dir, 'nb-2-big-Data.db');
  const info = parseCompressionInfo(
    fs.readFileSync(path.join(s.dir, 'nb-2-big-CompressionInfo.db')),
    'ci',
    true,
  );
  const n = info.chunkOffsets.length;
  t.true(n > 4);
  // Cut 10 bytes into chunk 2.
  fs.truncateSync(data, info.chunkOffsets[2] + 10);
  await expectFailureLeavesSource(t, s, 'ERR_TDE_CORRUPT_COMPRESSION_INFO', [
    new RegExp(
      `Data\\.db \\(${info.chunkOffsets[2] + 10} bytes\\) is too short for the ${n} chunks ` +
        `listed: it ends inside chunk 2, which starts at ${info.chunkOffsets[2]}, and the ` +
        `${n - 3} chunks after it lie past its end`,
    ),
  ]);
});

test('an empty Index.db or Statistics.db is a fault, encrypted or plain', async (t) => {
  const s = await encryptedTable();
  fs.writeFileSync(path.join(s.dir, 'nb-2-big-Index.db'), '');
  await expectFailureLeavesSource(t, s, 'ERR_TDE_MISSING_COMPONENT', [
    /nb-2-big-Index\.db is empty, though an SSTable with data always has content there/,
  ]);
  // verify reads a plain Statistics.db no further than this check: it must still be caught.
  const plain = makeDataDir((c) => c.table === 'legacy_nb_simple');
  const stats = path.join(plain, 'legacy_tables', 'legacy_nb_simple', 'nb-1-big-Statistics.db');
  fs.writeFileSync(stats, '');
  const v = await cli('verify', '--data-dir', plain, '--config', s.keys.configFile);
  t.is(v.code, 1);
  t.regex(v.stdout, /\[ERR_TDE_MISSING_COMPONENT\] .*nb-1-big-Statistics\.db is empty/);
});

test('a CRC.db cut inside a checksum says so, never counting fractions of checksums', (t) => {
  const whole = Buffer.alloc(4 + 6 * 4);
  whole.writeInt32BE(65536, 0);
  t.is(parseCrcDb(whole, 'x-CRC.db', 336016).checksums.length, 6);
  for (const length of [6, 9, 4 + 6 * 4 - 1, 4 + 6 * 4 + 2]) {
    const cut = Buffer.alloc(length);
    cut.writeInt32BE(65536, 0);
    const err = t.throws(() => parseCrcDb(cut, 'x-CRC.db', 336016), {
      code: 'ERR_TDE_CORRUPT_CRC',
    });
    t.regex(
      err!.message,
      new RegExp(
        `^x-CRC\\.db is damaged: its last checksum has ` +
          `${(length - 4) % 4} of its 4 bytes \\(the file is ${length} bytes\\).* need 6 checksums`,
      ),
    );
    t.notRegex(err!.message, /\d\.\d+ checksums/);
  }
});

test(
  'an unknown compressor class in CompressionInfo.db ' + 'is reported with the known ones',
  async (t) => {
    const s = await encryptedTable();
    const file = path.join(s.dir, 'nb-2-big-CompressionInfo.db');
    const buf = fs.readFileSync(file);
    const name = 'EncryptingLZ4Compressor';
    t.is(buf.toString('utf8', 2, 2 + name.length), name);
    buf.write('EncryptingLZ9Compressor', 2);
    fs.writeFileSync(file, buf);
    await expectFailureLeavesSource(t, s, 'ERR_TDE_UNKNOWN_COMPRESSOR', [
      /EncryptingLZ9Compressor/,
      /did you mean "EncryptingLZ4Compressor"/,
    ]);
  },
);

test(
  'encrypted_components naming a path out of ' + 'the table directory is refused, not opened',
  async (t) => {
    const s = await encryptedTable();
    const file = path.join(s.dir, 'nb-2-big-CompressionInfo.db');
    const info = parseCompressionInfo(fs.readFileSync(file), file, true);
    t.is(info.options.encrypted_components, 'Index.db,Summary.db,Statistics.db');
    // A FIFO outside the data directory: opening it for reading waits for a writer forever, so
    // reaching it hung verify and upgradesstables (the ava timeout would fail this test).
    const fifo = path.join(s.keys.dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const name = `x/../${path.relative(s.dir, fifo)}`;
    info.options.encrypted_components = `Index.db,${name}`;
    fs.writeFileSync(file, serializeCompressionInfo(info, true));
    await expectFailureLeavesSource(t, s, 'ERR_TDE_CORRUPT_COMPRESSION_INFO', [
      /nb-2-big-CompressionInfo\.db lists ".*fifo" in encrypted_components/,
      /only Index\.db, Summary\.db, Statistics\.db may appear/,
      /restore the SSTable/,
    ]);
    // A name listed twice is refused too; the writer refuses to record either.
    info.options.encrypted_components = 'Index.db,Index.db';
    fs.writeFileSync(file, serializeCompressionInfo(info, true));
    await t.throwsAsync(() => SSTableReader.open(s.files), {
      code: 'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      message: /"Index\.db" in encrypted_components twice/,
    });
    const dir = fs.mkdtempSync(path.join(s.keys.dir, 'w-'));
    const id = { dir, version: 'nb', generation: '1', format: 'big' as const };
    const params = { enabled: false, chunkLength: 65536, codecOptions: {} };
    const writer = await SSTableDataWriter.create({ id, params });
    await t.throwsAsync(() => writer.finish({ encryptedComponents: ['../Index.db'] }), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /may name only Index\.db, Summary\.db/,
    });
    await writer.abort();
  },
);

test(
  'the corpus table with a bad chunk checksum is reported by verify and refused by ' +
    'upgradesstables',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'lz4_invalid_checksums');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const schema = path.join(keys.dir, 's.cql');
    fs.writeFileSync(
      schema,
      `ALTER TABLE test_ks.lz4_invalid_checksums WITH compression = {'class': ` +
        `'EncryptingLZ4Compressor'};`,
    );
    const before = treeHashes(dataDir);
    const v = await cli('verify', '--data-dir', dataDir, '--config', keys.configFile, '--json');
    t.is(v.code, 1);
    const report = JSON.parse(v.stdout);
    t.deepEqual(
      report.sstables[0].faults.map((f: { code: string; chunk?: number }) => [
        f.code,
        f.chunk ?? null,
      ]),
      [
        ['ERR_TDE_CHUNK_CHECKSUM', 2],
        ['ERR_TDE_DIGEST_MISMATCH', null],
      ],
    );
    const up = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      keys.configFile,
    );
    t.is(up.code, 1);
    t.regex(up.stdout, /chunk 2 at offset/);
    t.deepEqual(treeHashes(dataDir), before);
  },
);

test(
  'a digest-only fault is reported as such, refused by default and rewritten with ' +
    '--ignore-digest',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_me_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_me_clust');
    fs.writeFileSync(path.join(dir, 'me-1-big-Digest.crc32'), '12345');
    const schema = path.join(keys.dir, 's.cql');
    fs.writeFileSync(
      schema,
      `ALTER TABLE legacy_tables.legacy_me_clust WITH compression = {'class': ` +
        `'EncryptingLZ4Compressor'};`,
    );

    const v = await cli('verify', '--data-dir', dataDir, '--config', keys.configFile);
    t.is(v.code, 1);
    t.regex(
      v.stdout,
      new RegExp(
        /ERR_TDE_DIGEST_MISMATCH.*every chunk matches its own checksum: either the Digest /.source +
          /file is wrong, or whole chunks were reordered or replaced/.source,
      ),
    );

    const before = treeHashes(dataDir);
    const refused = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      keys.configFile,
    );
    t.is(refused.code, 1);
    t.regex(refused.stdout, /ERR_TDE_DIGEST_MISMATCH.*--ignore-digest/);
    t.deepEqual(treeHashes(dataDir), before);

    const forced = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      keys.configFile,
      '--ignore-digest',
    );
    t.is(forced.code, 0, forced.stderr);
    t.is((await cli('verify', '--data-dir', dataDir, '--config', keys.configFile)).code, 0);
  },
);

test('a schema naming an unknown class or option fails before anything is touched', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_me_simple');
  const keys = makeKeySetup();
  const schema = path.join(keys.dir, 's.cql');
  fs.writeFileSync(
    schema,
    `ALTER TABLE legacy_tables.legacy_me_simple WITH compression = {'class': ` +
      `'EncryptingLZ4Compressor', 'cipher_algoritm': 'AES'};`,
  );
  const before = treeHashes(dataDir);
  const r = await cli(
    'upgradesstables',
    '--data-dir',
    dataDir,
    '--schema',
    schema,
    '--config',
    keys.configFile,
  );
  t.is(r.code, 1);
  t.regex(r.stdout, /ERR_TDE_BAD_OPTION.*cipher_algoritm.*did you mean "cipher_algorithm"/);
  t.regex(r.stdout, /s\.cql:1/);
  t.deepEqual(treeHashes(dataDir), before);
});
