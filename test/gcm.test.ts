/**
 * Authenticated chunks (AES/GCM/NoPadding): a chunk that is altered, moved within its SSTable,
 * copied from another SSTable, or cut off the end fails with ERR_TDE_INTEGRITY instead of
 * returning wrong data, even when its checksum and CompressionInfo.db are fixed up to match.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';

import { chunkAad } from '../src/compression/binding';
import { createKeyFile } from '../src/keys/key-file';
import { upgradeSSTables } from '../src/rewrite/upgrade';
import { parseSchema } from '../src/schema/cql';
import { parseCompressionInfo, serializeCompressionInfo } from '../src/sstable/compression-info';
import { componentPath, SSTableFiles } from '../src/sstable/descriptor';
import { cli, makeDataDir, makeKeySetup, onlySSTable, readAll } from './helpers';

const TABLES = ['legacy_nb_clust', 'legacy_oa_clust'];

async function gcmTables() {
  const dataDir = makeDataDir((c) => TABLES.includes(c.table));
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/GCM/NoPadding', 256);
  const report = await upgradeSSTables({
    dataDir,
    config: keys.config,
    schema: parseSchema(
      TABLES.map(
        (t) =>
          `ALTER TABLE legacy_tables.${t} WITH compression = {'class': ` +
          `'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/GCM/NoPadding', ` +
          `'secret_key_strength': 256, 'chunk_length_kb': 16};`,
      ).join('\n'),
    ),
  });
  if (report.rewritten !== 2) throw new Error(JSON.stringify(report.results));
  const files = TABLES.map((t) => onlySSTable(path.join(dataDir, 'legacy_tables', t)));
  return { dataDir, keys, files };
}

/** The chunks of an SSTable as stored, with CompressionInfo.db, for surgery. */
function open(files: SSTableFiles) {
  const ciFile = componentPath(files, 'CompressionInfo.db');
  const info = parseCompressionInfo(fs.readFileSync(ciFile), ciFile, true);
  const data = fs.readFileSync(componentPath(files, 'Data.db'));
  const chunks = info.chunkOffsets.map((o, i) =>
    data.subarray(
      o,
      (i + 1 < info.chunkOffsets.length ? info.chunkOffsets[i + 1] : data.length) - 4,
    ),
  );
  return { info, chunks };
}

/** Writes chunks back with correct checksums, offsets, lengths and digest: only GCM can object. */
function save(files: SSTableFiles, info: ReturnType<typeof open>['info'], chunks: Buffer[]) {
  const parts: Buffer[] = [];
  const offsets: number[] = [];
  let at = 0;
  for (const c of chunks) {
    offsets.push(at);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(zlib.crc32(c));
    parts.push(c, sum);
    at += c.length + 4;
  }
  const data = Buffer.concat(parts);
  fs.writeFileSync(componentPath(files, 'Data.db'), data);
  const dataLength = Math.min(info.dataLength, chunks.length * info.chunkLength);
  fs.writeFileSync(
    componentPath(files, 'CompressionInfo.db'),
    serializeCompressionInfo({ ...info, chunkOffsets: offsets, dataLength }, true),
  );
  fs.writeFileSync(componentPath(files, 'Digest.crc32'), String(zlib.crc32(data)));
}

async function expectIntegrityFailure(
  t: any,
  s: Awaited<ReturnType<typeof gcmTables>>,
  chunk: number | undefined,
) {
  const v = await cli(
    'verify',
    '--data-dir',
    s.dataDir,
    '--config',
    s.keys.configFile,
    '--json',
    'legacy_tables',
    TABLES[0],
  );
  t.is(v.code, 1);
  const faults = JSON.parse(v.stdout).sstables[0].faults;
  t.true(faults.length >= 1);
  t.is(faults[0].code, 'ERR_TDE_INTEGRITY');
  t.is(faults[0].chunk, chunk);
  await t.throwsAsync(() => readAll(s.files[0], s.keys.config), { code: 'ERR_TDE_INTEGRITY' });
}

test(
  'GCM tables round-trip and verify; chunks ' + 'are [12-byte nonce][ciphertext][16-byte tag]',
  async (t) => {
    const s = await gcmTables();
    const original = await readAll(
      onlySSTable(
        path.join(
          makeDataDir((c) => c.table === TABLES[0]),
          'legacy_tables',
          TABLES[0],
        ),
      ),
    );
    t.true((await readAll(s.files[0], s.keys.config)).equals(original));
    const { info, chunks } = open(s.files[0]);
    t.regex(info.options.sstable_id, /^[0-9a-f]{32}$/);
    t.is(info.options.cipher_algorithm, 'AES/GCM/NoPadding');

    // Independently: Node's crypto opens chunk 0 given the documented additional data.
    const key = Buffer.from(
      fs.readFileSync(path.join(s.keys.dir, 'system_key'), 'utf8').trim().split(':')[2],
      'base64',
    );
    const aad = Buffer.concat([
      Buffer.from('sstable-tde chunk v1\0', 'latin1'),
      Buffer.from(info.options.sstable_id, 'hex'),
      Buffer.alloc(8),
      Buffer.from([chunks.length === 1 ? 1 : 0]),
      Buffer.from(info.options.key_check_value, 'hex'),
    ]);
    const c0 = chunks[0];
    const d = crypto.createDecipheriv('aes-256-gcm', key, c0.subarray(0, 12));
    d.setAAD(aad);
    d.setAuthTag(c0.subarray(c0.length - 16));
    const lz4Chunk = Buffer.concat([d.update(c0.subarray(12, c0.length - 16)), d.final()]);
    t.is(lz4Chunk.readUInt32LE(0), 16384);
    t.is((await cli('verify', '--data-dir', s.dataDir, '--config', s.keys.configFile)).code, 0);
  },
);

test(
  'GCM: a flipped ciphertext byte with its checksum fixed up is an integrity failure, never ' +
    'data',
  async (t) => {
    const s = await gcmTables();
    const { info, chunks } = open(s.files[0]);
    const altered = chunks.map((c) => Buffer.from(c));
    altered[3][20] ^= 0x01;
    save(s.files[0], info, altered);
    await expectIntegrityFailure(t, s, 3);
  },
);

test('GCM: two chunks swapped within the SSTable fail at the first moved one', async (t) => {
  const s = await gcmTables();
  const { info, chunks } = open(s.files[0]);
  const swapped = [...chunks];
  [swapped[1], swapped[2]] = [swapped[2], swapped[1]];
  save(s.files[0], info, swapped);
  await expectIntegrityFailure(t, s, 1);
});

test('GCM: a chunk copied in from another SSTable under the same key fails', async (t) => {
  const s = await gcmTables();
  const mine = open(s.files[0]);
  const theirs = open(s.files[1]);
  const mixed = [...mine.chunks];
  mixed[0] = theirs.chunks[0];
  save(s.files[0], mine.info, mixed);
  await expectIntegrityFailure(t, s, 0);
});

test(
  'GCM: chunks cut off the end, with CompressionInfo.db shortened to match, fail the metadata ' +
    'tag',
  async (t) => {
    const s = await gcmTables();
    const { info, chunks } = open(s.files[0]);
    save(s.files[0], info, chunks.slice(0, chunks.length - 2));
    // The metadata tag sees the shorter SSTable before any chunk is read.
    await expectIntegrityFailure(t, s, undefined);
  },
);

test(
  'GCM: the last chunk is marked, so a cut end ' + 'fails at the chunk level too (tag check aside)',
  async (t) => {
    const id = Buffer.alloc(16, 7);
    const kcv = '0011223344556677';
    const last = chunkAad({ sstableId: id, first: 5, last: 5 }, 1, kcv)[0];
    const middle = chunkAad({ sstableId: id, first: 5, last: 9 }, 1, kcv)[0];
    t.false(last.equals(middle));
    t.is(last.length, middle.length);
  },
);

test('ECB tables get a warning once per table, saying why', async (t) => {
  const dataDir = makeDataDir(
    (c) => c.table === 'legacy_me_clust' || c.table === 'legacy_me_simple',
  );
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/ECB/PKCS5Padding', 128);
  const schema = path.join(keys.dir, 's.cql');
  fs.writeFileSync(
    schema,
    ['legacy_me_clust', 'legacy_me_simple']
      .map(
        (tb) =>
          `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': 'Encryptor', ` +
          `'cipher_algorithm': 'AES/ECB/PKCS5Padding'};`,
      )
      .join('\n'),
  );
  const r = await cli(
    'upgradesstables',
    '--data-dir',
    dataDir,
    '--schema',
    schema,
    '--config',
    keys.configFile,
  );
  t.is(r.code, 0);
  const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'));
  t.is(warnings.length, 2);
  t.regex(
    warnings[0],
    new RegExp(
      /table legacy_tables\.legacy_me_clust: AES\/ECB\/PKCS5Padding encrypts equal /.source +
        /16-byte blocks to equal ciphertext/.source,
    ),
  );
});

test(
  'GCM: an SSTable emptied of every chunk, with CompressionInfo.db and Digest to match, fails ' +
    'its metadata tag',
  async (t) => {
    const s = await gcmTables();
    const { info } = open(s.files[0]);
    save(s.files[0], { ...info, dataLength: 0 }, []);
    const v = await cli(
      'verify',
      '--data-dir',
      s.dataDir,
      '--config',
      s.keys.configFile,
      '--json',
      'legacy_tables',
      TABLES[0],
    );
    t.is(v.code, 1);
    const [fault] = JSON.parse(v.stdout).sstables[0].faults;
    t.is(fault.code, 'ERR_TDE_INTEGRITY');
    t.regex(fault.message, /CompressionInfo\.db fails its authentication tag \(sstable_tag\)/);
  },
);

test(
  'GCM: rewriting the chunks as CTR under the same key (a downgrade) is refused, the key ' +
    'being for GCM only',
  async (t) => {
    const s = await gcmTables();
    const { info, chunks } = open(s.files[0]);
    // GCM is CTR with a tag: [nonce][ct][tag] becomes [nonce || counter 2][ct] under
    // AES/CTR/NoPadding.
    const asCtr = chunks.map((c) =>
      Buffer.concat([c.subarray(0, 12), Buffer.from([0, 0, 0, 2]), c.subarray(12, c.length - 16)]),
    );
    const options = { ...info.options, cipher_algorithm: 'AES/CTR/NoPadding' };
    delete (options as Record<string, string>).sstable_tag;
    save(s.files[0], { ...info, options }, asCtr);
    const v = await cli(
      'verify',
      '--data-dir',
      s.dataDir,
      '--config',
      s.keys.configFile,
      '--json',
      'legacy_tables',
      TABLES[0],
    );
    t.is(v.code, 1);
    const [fault] = JSON.parse(v.stdout).sstables[0].faults;
    t.is(fault.code, 'ERR_TDE_KEY_NOT_FOUND');
    t.regex(fault.message, /keys made for AES\/GCM\/NoPadding serve GCM only/);
  },
);
