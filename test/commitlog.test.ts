/**
 * Commit log and hints: Cassandra 3.4's own encrypted segments read with the JCEKS store they
 * were written with (no JVM), sstable-tde's segment and hints writers, torn tails, and
 * system_info_encryption end to end.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { configResolver, keyStoreResolver } from '../src/commitlog/keys';
import { serializeHeader, parseHeader } from '../src/commitlog/format';
import { hintsFileNames, HintsWriter, readHintsFile } from '../src/commitlog/hints';
import { readSegment, SegmentWriter } from '../src/commitlog/segment';
import { openCommitLogSegment, systemInfoKey } from '../src/commitlog/system';
import { configFromObject } from '../src/config/config';
import { readJceksSecretKey } from '../src/config/jceks';
import { createKeyFile } from '../src/keys/key-file';
import { KeyProviders } from '../src/keys/provider';
import {
  cli,
  FIXTURES,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  ROOT,
  tempDir,
} from './helpers';

const CL = path.join(FIXTURES, 'commitlog');
const STORE = path.join(CL, 'cassandra.keystore');
const FULL = path.join(CL, '3.4-encrypted', 'CommitLog-6-1480001790338.log');
const EMPTY = path.join(CL, '3.4-encrypted', 'CommitLog-6-1480001790339.log');
const storeArgs = ['--keystore', STORE, '--keystore-password', 'cassandra'];

test("the JCEKS store yields Cassandra's AES keys without a JVM", (t) => {
  // The values Java's KeyStore.getKey returns for this store.
  t.is(
    readJceksSecretKey(STORE, 'cassandra', 'testing:1').key.toString('hex'),
    'b7d96fb9b11d829179aeeb0b4e81f97a',
  );
  t.is(
    readJceksSecretKey(STORE, 'cassandra', 'Testing:2').key.toString('hex'),
    '5b580ef7c05053e49aa4244736ae5744',
  );
  t.is(readJceksSecretKey(STORE, 'cassandra', 'testing:1').algorithm, 'AES');
});

test(
  "Cassandra 3.4's encrypted segments verify: every block decrypts and decompresses, every " +
    'checksum holds',
  async (t) => {
    const r = await cli('commitlog', 'verify', FULL, EMPTY, ...storeArgs, '--json');
    t.is(r.code, 0, r.stdout);
    const [full, empty] = JSON.parse(r.stdout);
    t.like(full, {
      version: 6,
      id: '1480001790338',
      cipher: 'AES/CBC/PKCS5Padding',
      keyAlias: 'testing:1',
      sections: 2,
      blocks: 46,
      dataBytes: 2949446,
      entries: 14562,
      storedBytes: 1452357,
      complete: true,
    });
    t.like(empty, { sections: 1, blocks: 0, entries: 0, complete: true });
    const text = await cli('commitlog', 'verify', FULL, ...storeArgs);
    t.regex(
      text.stdout,
      new RegExp(
        /ok +.*CommitLog-6-1480001790338\.log: 2 sections, 46 blocks, 14562 entries, /.source +
          /2949446 bytes of data/.source,
      ),
    );
  },
);

test(
  'a wrong store password, a wrong key password and an unknown key alias each give their own ' +
    'error',
  async (t) => {
    const wrongStore = await cli(
      'commitlog',
      'verify',
      FULL,
      '--keystore',
      STORE,
      '--keystore-password',
      'nope',
    );
    t.is(wrongStore.code, 1);
    t.regex(
      wrongStore.stdout,
      /\[ERR_TDE_KEYSTORE_PASSWORD\] .*the store password is wrong \(keystore_password\)/,
    );
    const wrongKey = await cli('commitlog', 'verify', FULL, ...storeArgs, '--key-password', 'nope');
    t.regex(
      wrongKey.stdout,
      /\[ERR_TDE_KEYSTORE_PASSWORD\] .*the password of key testing:1 is wrong \(key_password\)/,
    );
    // A store password without the store is a usage error, not silently ignored.
    const noStore = await cli('commitlog', 'verify', FULL, '--keystore-password', 'cassandra');
    t.is(noStore.code, 2);
    t.regex(noStore.stderr, /--keystore-password only applies with --keystore FILE/);

    // The same segment naming a key the store lacks (header checksum made to match).
    const dir = tempDir('cl');
    const buf = fs.readFileSync(FULL);
    const header = parseHeader(buf, FULL);
    const moved = serializeHeader(header.version, header.id, {
      ...header.params,
      encKeyAlias: 'testing:9',
    });
    const file = path.join(dir, 'CommitLog-6-1480001790338.log');
    fs.writeFileSync(file, Buffer.concat([moved, buf.subarray(header.length)]));
    const alias = await cli('commitlog', 'verify', file, ...storeArgs);
    t.regex(
      alias.stdout,
      new RegExp(
        /\[ERR_TDE_KEY_NOT_FOUND\] key store .* has no secret key "testing:9" \(it holds /.source +
          /testing:2, testing:1\)/.source,
      ),
    );
  },
);

test(
  'a Cassandra segment verified with --config ' + 'instead of its key store is told to use it',
  async (t) => {
    const keys = makeKeySetup();
    const r = await cli('commitlog', 'verify', FULL, '--config', keys.configFile);
    t.is(r.code, 1);
    t.regex(r.stdout, /\[ERR_TDE_KEY_NOT_FOUND\] segment key "testing:1" is not a key file in/);
    t.regex(r.stdout, /--keystore FILE --keystore-password PASSWORD/);
    t.false(r.stdout.includes('createsystemkey'), 'a new key never decrypts an existing segment');
  },
);

test(
  'a truncated segment stops at the cut and ' + 'says so; a damaged block is told apart',
  async (t) => {
    const dir = tempDir('cl');
    const cut = path.join(dir, 'cut.log');
    fs.writeFileSync(cut, fs.readFileSync(FULL).subarray(0, 700000));
    const r = await cli('commitlog', 'verify', cut, ...storeArgs, '--json');
    t.is(r.code, 1);
    const [report] = JSON.parse(r.stdout);
    t.like(report.stoppedAt, { offset: 125, truncated: true, code: 'ERR_TDE_SEGMENT_TRUNCATED' });
    t.regex(report.stoppedAt.reason, /should end at 1452345, but the file ends at 700000/);

    const bad = path.join(dir, 'bad.log');
    const b = Buffer.from(fs.readFileSync(FULL));
    b[5000] ^= 0x40;
    fs.writeFileSync(bad, b);
    const d = JSON.parse((await cli('commitlog', 'verify', bad, ...storeArgs, '--json')).stdout)[0];
    t.is(d.stoppedAt.code, 'ERR_TDE_SEGMENT_DAMAGED');
    t.regex(d.stoppedAt.reason, /does not decrypt and decompress/);
  },
);

test(
  'segments sstable-tde writes read back entry ' + 'for entry, and verify from the command line',
  async (t) => {
    const dir = tempDir('cl');
    const file = path.join(dir, 'CommitLog-7-42.log');
    const key = readJceksSecretKey(STORE, 'cassandra', 'testing:2').key;
    const w = await SegmentWriter.create({
      file,
      id: 42n,
      encryption: { transformation: 'AES/CBC/PKCS5Padding', key, keyAlias: 'testing:2' },
      blockLength: 4096,
    });
    const entries = Array.from({ length: 500 }, (_, i) =>
      Buffer.concat([Buffer.from(`mutation ${i} `), randomBytes(i % 300)]),
    );
    for (let i = 0; i < entries.length; i++) {
      w.append(entries[i]);
      if (i % 100 === 99) await w.sync();
    }
    await w.close();
    const seen: Buffer[] = [];
    const report = await readSegment(
      file,
      keyStoreResolver({ file: STORE, password: 'cassandra' }),
      (e) => seen.push(Buffer.from(e)),
    );
    t.like(report, {
      version: 7,
      id: '42',
      sections: 5,
      entries: 500,
      complete: true,
      keyAlias: 'testing:2',
    });
    t.deepEqual(seen, entries);
    t.true(report.blocks > 5, 'sections of more than 4 KiB are split into blocks');
    t.false(fs.readFileSync(file).includes(Buffer.from('mutation 1')));
    t.is((await cli('commitlog', 'verify', file, ...storeArgs)).code, 0);
  },
);

test('a crash while a section is written loses only that section', async (t) => {
  const dir = tempDir('cl');
  const file = path.join(dir, 'CommitLog-7-9.log');
  const script =
    `
    const { SegmentWriter } = ` +
    `require(${JSON.stringify(path.join(ROOT, 'dist/commitlog/segment.js'))});
    (async () => {
      const w = await SegmentWriter.create({ file: process.argv[1], id: 9n, encryption: { ` +
    `transformation: 'AES/CBC/PKCS5Padding', key: Buffer.alloc(16, 3), keyAlias: 'k' } });
      for (let s = 0; s < 3; s++) { for (let i = 0; i < 50; i++) ` +
    `w.append(Buffer.from('entry ' + s + ' ' + i)); await w.sync(); }
      for (let i = 0; i < 50; i++) w.append(Buffer.from('lost ' + i));
      // Die between the section's blocks and its marker, as a power cut would.
      const fd = w.fd; const orig = fd.write.bind(fd);
      fd.write = (...a) => { process.kill(process.pid, 'SIGKILL'); return orig(...a); };
      await w.sync();
    })();`;
  const r = spawnSync(process.execPath, ['-e', script, file]);
  t.is(r.signal, 'SIGKILL');
  const seen: string[] = [];
  const report = await readSegment(
    file,
    async () => Buffer.alloc(16, 3),
    (e) => seen.push(e.toString()),
  );
  t.is(report.sections, 3);
  t.is(seen.length, 150);
  t.is(seen[149], 'entry 2 49');
  t.like(report.stoppedAt, { truncated: true, code: 'ERR_TDE_SEGMENT_TRUNCATED' });
  t.regex(report.stoppedAt!.reason, /was never finished/);
});

test('hints files: written encrypted, read back, and damage is reported', async (t) => {
  const dir = tempDir('hints');
  const names = hintsFileNames(dir, '0c4f3b9e-5b5a-4d1b-9c6e-2b1f0f3a7d11', 1733000000000);
  const key = Buffer.alloc(16, 9);
  const w = await HintsWriter.create(
    names,
    { hostId: '0c4f3b9e-5b5a-4d1b-9c6e-2b1f0f3a7d11', timestamp: 1733000000000 },
    { transformation: 'AES/CBC/PKCS5Padding', key, keyAlias: 'hints-key' },
    2048,
  );
  const hints = Array.from({ length: 300 }, (_, i) =>
    Buffer.from(`hint ${i} `.repeat((i % 7) + 1)),
  );
  await w.write(hints.slice(0, 100));
  await w.write(hints.slice(100));
  await w.close();
  const seen: Buffer[] = [];
  const r = await readHintsFile(
    names,
    async () => Buffer.from(key),
    (h) => seen.push(Buffer.from(h)),
  );
  t.is(r.hints, 300);
  t.deepEqual(seen, hints);
  t.false(fs.readFileSync(names.data).includes(Buffer.from('hint 1')));
  const descriptor = JSON.parse(fs.readFileSync(names.descriptor, 'utf8'));
  t.is(descriptor.parameters.encryption.encCipher, 'AES/CBC/PKCS5Padding');

  const b = fs.readFileSync(names.data);
  b[40] ^= 1;
  fs.writeFileSync(names.data, b);
  await t.throwsAsync(() => readHintsFile(names, async () => Buffer.from(key)), {
    code: 'ERR_TDE_SEGMENT_DAMAGED',
    message: /does not match its checksum file/,
  });
});

test(
  'system_info_encryption: commit log segments under the configured local key, verified by ' +
    'key file name',
  async (t) => {
    const dir = tempDir('sysinfo');
    createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 256);
    const configFile = path.join(dir, 'dse.yaml');
    fs.writeFileSync(
      configFile,
      `system_key_directory: ${dir}\nsystem_info_encryption:\n  enabled: true\n  ` +
        `cipher_algorithm: AES/CBC/PKCS5Padding\n  secret_key_strength: 256\n  ` +
        `chunk_length_kb: 16\n`,
    );
    const config = configFromObject(
      {
        system_key_directory: dir,
        system_info_encryption: {
          enabled: true,
          cipher_algorithm: 'AES/CBC/PKCS5Padding',
          secret_key_strength: 256,
          chunk_length_kb: 16,
        },
      },
      configFile,
    );
    const keys = new KeyProviders(config);
    try {
      const file = path.join(dir, 'CommitLog-7-100.log');
      const w = await openCommitLogSegment(config, keys, file, 100n);
      for (let i = 0; i < 1000; i++) w.append(Buffer.from(`row ${i}`));
      await w.close();
      const r = await readSegment(file, configResolver(config, keys));
      t.like(r, {
        entries: 1000,
        keyAlias: 'system_key',
        cipher: 'AES/CBC/PKCS5Padding',
        complete: true,
      });
      t.is((await cli('commitlog', 'verify', file, '--config', configFile)).code, 0);
    } finally {
      keys.close();
    }
    // A key of another strength does not do.
    const other = configFromObject({
      system_key_directory: dir,
      system_info_encryption: {
        enabled: true,
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: 128,
      },
    });
    const k2 = new KeyProviders(other);
    await t.throwsAsync(() => systemInfoKey(other, k2), {
      code: 'ERR_TDE_KEY_NOT_FOUND',
      message: /no AES 128-bit key/,
    });
    k2.close();
  },
);

test(
  'upgradesstables -a system batchlog paxos encrypts them as system_info_encryption says, ' +
    'with no schema file',
  async (t) => {
    const dataDir = makeDataDir(
      (c) => c.table === 'legacy_nb_clust' || c.table === 'legacy_me_clust',
    );
    fs.mkdirSync(path.join(dataDir, 'system'));
    fs.renameSync(
      path.join(dataDir, 'legacy_tables', 'legacy_nb_clust'),
      path.join(dataDir, 'system', 'batchlog-0290003c977e397cac3efdfdc01d626b'),
    );
    fs.renameSync(
      path.join(dataDir, 'legacy_tables', 'legacy_me_clust'),
      path.join(dataDir, 'system', 'paxos-b7b7f0c2fd0a34108c053ef614bb7c2d'),
    );
    const batchlogDir = path.join(dataDir, 'system', 'batchlog-0290003c977e397cac3efdfdc01d626b');
    const original = await readAll(onlySSTable(batchlogDir));
    const dir = tempDir('sysinfo');
    createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const configFile = path.join(dir, 'dse.yaml');
    fs.writeFileSync(
      configFile,
      `system_key_directory: ${dir}\nsystem_info_encryption:\n  enabled: true\n  ` +
        `cipher_algorithm: AES/CBC/PKCS5Padding\n  secret_key_strength: 128\n`,
    );

    const r = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--config',
      configFile,
      '-a',
      'system',
      'batchlog',
      'paxos',
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    t.regex(r.stdout, /2 rewritten/);
    const described = JSON.parse(
      (await cli('describe', '--data-dir', dataDir, '--json', 'system')).stdout,
    );
    t.true(
      described.every(
        (d: { compressor: string; options: Record<string, string> }) =>
          d.compressor === 'EncryptingLZ4Compressor' &&
          d.options.cipher_algorithm === 'AES/CBC/PKCS5Padding',
      ),
    );
    t.true(
      (
        await readAll(onlySSTable(batchlogDir), configFromObject({ system_key_directory: dir }))
      ).equals(original),
    );
  },
);

test('a file too large to be a segment is refused before it is read', async (t) => {
  const dir = tempDir('segment-huge');
  const file = path.join(dir, 'CommitLog-7-1.log');
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, 3 * 2 ** 30); // sparse: takes no space
  const resolve = async () => {
    throw new Error('no key is needed to refuse it');
  };
  await t.throwsAsync(() => readSegment(file, resolve), {
    code: 'ERR_TDE_SEGMENT_HEADER',
    message: /is 3221225472 bytes, more than any commit log segment can be .*: it is not a segment/,
  });
});
