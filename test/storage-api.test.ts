/**
 * The library API a storage process uses: write a new SSTable's data from a stream, read it by
 * position.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';

import {
  compressorForTable,
  KeyProviders,
  SSTableDataWriter,
  SSTableReader,
  upgradeSSTables,
} from '../src/index';
import { checksumFor } from '../src/checksum';
import { createKeyFile } from '../src/keys/key-file';
import { native } from '../src/native';
import { parseSchema } from '../src/schema/cql';
import { makeDataDir, makeKeySetup, onlySSTable, readAll, tempDir } from './helpers';

/** A key setup and an LZ4 writer for SSTable nb-GENERATION-big in a fresh directory. */
async function lz4Writer(name: string, generation: string, chunkKb: number, encrypted = false) {
  const keys = makeKeySetup();
  if (encrypted) createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const provider = new KeyProviders(keys.config);
  const lz4 = await compressorForTable(
    encrypted
      ? {
          class: 'EncryptingLZ4Compressor',
          cipher_algorithm: 'AES/CBC/PKCS5Padding',
          secret_key_strength: 128,
          chunk_length_kb: chunkKb,
        }
      : { class: 'LZ4Compressor', chunk_length_kb: chunkKb },
    { keys: provider },
  );
  const id = { dir: tempDir(name), version: 'nb', generation, format: 'big' as const };
  const writer = await SSTableDataWriter.create({ id, params: lz4.params, compressor: lz4 });
  return { provider, lz4, id, writer };
}

/**
 * An LZ4 SSTable (with `encrypted`, EncryptingLZ4 AES-128-CBC) of `mib` MiB of random bytes,
 * which do not compress, open for reading.
 */
async function randomLz4Reader(name: string, generation: string, mib: number, encrypted = false) {
  const { provider, lz4, id, writer } = await lz4Writer(name, generation, 64, encrypted);
  await writer.write(crypto.randomBytes(mib << 20));
  const result = await writer.finish();
  lz4.close();
  const reader = await SSTableReader.open(
    { ...id, components: result.components },
    { keys: provider },
  );
  return { provider, id, reader };
}

test(
  'a storage process writes Data.db + CompressionInfo.db from a stream and reads it back by ' +
    'position',
  async (t) => {
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 256);
    const provider = new KeyProviders(keys.config);
    const compressor = await compressorForTable(
      {
        class: 'EncryptingSnappyCompressor',
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: 256,
        chunk_length_kb: 16,
      },
      { keys: provider },
    );
    const dir = tempDir('flush');
    const id = { dir, version: 'nb', generation: '7', format: 'big' as const };
    const writer = await SSTableDataWriter.create({ id, params: compressor.params, compressor });

    // A memtable flush: many small appends of partly compressible data.
    const data = Buffer.concat(
      Array.from({ length: 300 }, (_, i) =>
        Buffer.concat([
          Buffer.from(`partition-${i}:`),
          crypto.randomBytes(i % 50),
          Buffer.alloc(1000, i),
        ]),
      ),
    );
    for (let at = 0; at < data.length; at += 777) await writer.write(data.subarray(at, at + 777));
    const result = await writer.finish();
    compressor.close();
    t.deepEqual(result.components, ['Data.db', 'CompressionInfo.db', 'Digest.crc32']);
    t.is(result.dataLength, data.length);
    t.is(result.chunkCount, Math.ceil(data.length / 16384));
    t.false(
      fs.readFileSync(path.join(dir, 'nb-7-big-Data.db')).includes(Buffer.from('partition-1')),
    );

    const reader = await SSTableReader.open(id, { keys: provider });
    try {
      t.true(reader.encrypted);
      for (const [pos, len] of [
        [0, 10],
        [16380, 10],
        [100000, 50000],
        [data.length - 1, 1],
      ]) {
        t.true(
          (await reader.read(pos, len)).equals(data.subarray(pos, pos + len)),
          `read(${pos}, ${len})`,
        );
      }
      const report = await reader.verify('Digest.crc32');
      t.deepEqual(report.faults, []);
    } finally {
      await reader.close();
      provider.close();
    }
  },
);

test('an uncompressed SSTable can be written too: Data.db with CRC.db', async (t) => {
  const dir = tempDir('plain');
  const id = { dir, version: 'me', generation: '1', format: 'big' as const };
  const writer = await SSTableDataWriter.create({
    id,
    params: { enabled: false, chunkLength: 65536, codecOptions: {} },
  });
  const data = crypto.randomBytes(200000);
  await writer.write(data);
  const result = await writer.finish();
  t.deepEqual(result.components, ['Data.db', 'CRC.db', 'Digest.crc32']);
  t.is(fs.statSync(path.join(dir, 'me-1-big-CRC.db')).size, 4 + 4 * 4);
  t.true(fs.readFileSync(path.join(dir, 'me-1-big-Data.db')).equals(data));
  t.true((await readAll({ ...id, components: result.components })).equals(data));
  // abort() after a finish that succeeded leaves the complete SSTable alone.
  await writer.abort();
  t.deepEqual(fs.readdirSync(dir).sort(), [
    'me-1-big-CRC.db',
    'me-1-big-Data.db',
    'me-1-big-Digest.crc32',
  ]);
});

test('table directories named TABLE-<table id> are found like plain TABLE ones', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_oa_simple');
  const plain = path.join(dataDir, 'legacy_tables', 'legacy_oa_simple');
  const withId = `${plain}-0123456789abcdef0123456789abcdef`;
  fs.renameSync(plain, withId);
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const report = await upgradeSSTables({
    dataDir,
    config: keys.config,
    schema: parseSchema(
      `ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor'};`,
    ),
  });
  t.is(report.rewritten, 1);
  t.is(report.results[0].table, 'legacy_oa_simple');
  t.is(onlySSTable(withId).generation, '2');
});

test(
  'the writer serialises concurrent writes, refuses writes after finish or abort, and takes ' +
    'any byte view',
  async (t) => {
    const dir = tempDir('misuse');
    const id = { dir, version: 'nb', generation: '3', format: 'big' as const };
    const w = await SSTableDataWriter.create({
      id,
      params: { enabled: false, chunkLength: 65536, codecOptions: {} },
    });
    const a = Buffer.alloc(100000, 1);
    const b = Buffer.alloc(100000, 2);
    const u16 = new Uint16Array([1, 256, 3]);
    await Promise.all([w.write(a), w.write(b), w.write(u16), w.write(new Uint8Array([9]).buffer)]);
    await t.throwsAsync(() => w.write(12345 as unknown as Uint8Array), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /takes bytes/,
    });
    const last = w.write(Buffer.from('tail'));
    const finishing = w.finish();
    await t.throwsAsync(() => w.write(Buffer.from('late')), {
      message: /write\(\) after finish\(\)/,
    });
    await t.throwsAsync(() => w.finish(), { message: /finish\(\) after finish\(\)/ });
    await last;
    const result = await finishing;
    const expected = Buffer.concat([
      a,
      b,
      Buffer.from(u16.buffer),
      Buffer.from([9]),
      Buffer.from('tail'),
    ]);
    t.is(result.dataLength, expected.length);
    t.true((await readAll({ ...id, components: result.components })).equals(expected));

    const aborted = await SSTableDataWriter.create({
      id: { ...id, generation: '4' },
      params: { enabled: false, chunkLength: 65536, codecOptions: {} },
    });
    await aborted.abort();
    await t.throwsAsync(() => aborted.finish(), { message: /after abort\(\)/ });
    t.deepEqual(
      fs.readdirSync(dir).filter((f) => f.startsWith('nb-4-')),
      [],
    );
  },
);

test('SSTable ids that could name files outside their directory are refused', async (t) => {
  const dir = tempDir('ids');
  for (const bad of [
    { generation: '1-big-x/../../escape' },
    { version: '../' },
    { format: 'xyz' },
  ]) {
    await t.throwsAsync(
      () =>
        SSTableDataWriter.create({
          id: { dir, version: 'nb', generation: '1', format: 'big', ...bad } as never,
          params: { enabled: false, chunkLength: 65536, codecOptions: {} },
        }),
      { code: 'ERR_TDE_BAD_SSTABLE_NAME' },
    );
  }
  t.deepEqual(fs.readdirSync(dir), []);
});

test(
  'small chunks over several batches, from copied ' + 'and kept writes, read back as written',
  async (t) => {
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const provider = new KeyProviders(keys.config);
    const compressor = await compressorForTable(
      {
        class: 'EncryptingLZ4Compressor',
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: 128,
        chunk_length_kb: 4,
      },
      { keys: provider },
    );
    const dir = tempDir('small');
    const id = { dir, version: 'nb', generation: '3', format: 'big' as const };
    const writer = await SSTableDataWriter.create({ id, params: compressor.params, compressor });

    // 2500 chunks of 4 KiB: over two 1024-chunk batches. Small copied writes fill chunks cut from
    // shared regions; a large kept write in between hands whole chunks over as they are.
    const data = Buffer.alloc(2500 * 4096);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    const keptFrom = 700 * 4096;
    const keptTo = 1900 * 4096;
    for (let at = 0; at < keptFrom; at += 1000) {
      await writer.write(data.subarray(at, Math.min(at + 1000, keptFrom)));
    }
    await writer.write(Buffer.from(data.subarray(keptFrom, keptTo)), { keep: true });
    for (let at = keptTo; at < data.length; at += 3000) {
      await writer.write(data.subarray(at, Math.min(at + 3000, data.length)));
    }
    const result = await writer.finish();
    compressor.close();
    t.is(result.chunkCount, 2500);

    const reader = await SSTableReader.open(id, { keys: provider });
    try {
      const back: Buffer[] = [];
      for await (const chunks of reader.batches()) back.push(...chunks.map((c) => Buffer.from(c)));
      t.true(Buffer.concat(back).equals(data));
      t.deepEqual((await reader.verify('Digest.crc32')).faults, []);
    } finally {
      await reader.close();
      provider.close();
    }
  },
);

test(
  'a compressor that fails mid-stream: the write reports its error, the SSTable reads back its ' +
    'companions as written, and abort() removes every file without touching a closed file',
  async (t) => {
    const keys = makeKeySetup();
    const provider = new KeyProviders(keys.config);
    const lz4 = await compressorForTable(
      { class: 'LZ4Compressor', chunk_length_kb: 64 },
      { keys: provider },
    );
    // The third batch fails at once, while the second, slow to encode, is still to be written
    // (past 8 MiB, so its writeback is asked for): abort() must wait for that write.
    let batches = 0;
    const failing = Object.create(lz4);
    failing.compressBatch = async (chunks: Buffer[]) => {
      const n = batches++;
      if (n === 2) throw new Error('codec gone');
      if (n === 1) await new Promise((resolve) => setTimeout(resolve, 300));
      return lz4.compressBatch(chunks);
    };
    const dir = tempDir('mid-fail');
    const id = { dir, version: 'nb', generation: '5', format: 'big' as const };
    const writer = await SSTableDataWriter.create({
      id,
      params: lz4.params,
      compressor: failing,
    });
    const data = crypto.randomBytes(24 << 20);
    await t.throwsAsync(
      async () => {
        for (let at = 0; at < data.length; at += 1 << 20) {
          await writer.write(data.subarray(at, at + (1 << 20)));
        }
        await writer.finish();
      },
      { message: 'codec gone' },
    );
    await writer.abort();
    t.deepEqual(fs.readdirSync(dir), []);

    // The same writer's result, without the failure, lists each companion's bytes as written.
    const ok = await SSTableDataWriter.create({ id, params: lz4.params, compressor: lz4 });
    await ok.write(data.subarray(0, 10 << 20));
    const result = await ok.finish();
    t.deepEqual([...result.companions.keys()], ['CompressionInfo.db', 'Digest.crc32']);
    for (const [component, bytes] of result.companions) {
      t.true(fs.readFileSync(path.join(dir, `nb-5-big-${component}`)).equals(bytes), component);
    }
    lz4.close();
    provider.close();
  },
);

test('a kept write that starts inside a chunk never has its chunks overwritten by later copies', async (t) => {
  const { provider, lz4, id, writer } = await lz4Writer('kept-mid', '4', 16);

  // 8000 bytes copied, then 4 MiB kept: it completes the open chunk by copying, then hands over
  // 255 whole chunks (one short of a 256-chunk batch) and leaves a copied remainder; the copies
  // after it must get memory of their own, never that of a chunk already queued.
  const data = crypto.randomBytes(8000 + (4 << 20) + 16384 + 16384 + 5000);
  let at = 0;
  const put = async (n: number, keep = false) => {
    const piece = keep ? Buffer.from(data.subarray(at, at + n)) : data.subarray(at, at + n);
    await writer.write(piece, { keep });
    at += n;
  };
  await put(8000);
  await put(4 << 20, true);
  for (const n of [16384, 16384, 5000]) await put(n);
  const result = await writer.finish();
  t.is(result.dataLength, data.length);

  const reader = await SSTableReader.open(
    { ...id, components: result.components },
    { keys: provider },
  );
  try {
    t.true((await reader.read(0, data.length)).equals(data));
  } finally {
    await reader.close();
    lz4.close();
    provider.close();
  }
});

test(
  'compressBatch({ sums }) checksums each stored chunk in the encoding pass: the sums are those ' +
    'of the bytes returned, and fold() gives the digest a separate pass gives',
  async (t) => {
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    createKeyFile(keys.dir, 'des_key', 'DESede/CBC/PKCS5Padding', 168);
    const provider = new KeyProviders(keys.config);
    // Compressible, incompressible, tiny and odd-sized chunks, as a batch of a real table holds.
    const chunks = [
      Buffer.alloc(65536, 'cassandra '),
      crypto.randomBytes(65536),
      Buffer.from('x'),
      Buffer.concat([crypto.randomBytes(3000), Buffer.alloc(9001, 7)]),
    ];
    const classes = [
      { class: 'LZ4Compressor' },
      { class: 'DeflateCompressor' },
      { class: 'SnappyCompressor' },
      // AES-CBC takes the multi-buffer code, DESede goes through EVP, Encryptor has no codec.
      { class: 'EncryptingLZ4Compressor', cipher_algorithm: 'AES/CBC/PKCS5Padding' },
      {
        class: 'EncryptingDeflateCompressor',
        cipher_algorithm: 'DESede/CBC/PKCS5Padding',
        secret_key_strength: 168,
        system_key_file: 'des_key',
      },
      { class: 'Encryptor', cipher_algorithm: 'AES/ECB/PKCS5Padding' },
    ];
    for (const options of classes) {
      const compressor = await compressorForTable(
        { chunk_length_kb: 64, ...options },
        { keys: provider },
      );
      for (const kind of ['crc32', 'adler32'] as const) {
        const checksum = checksumFor(kind);
        const stored = await compressor.compressBatch(chunks, undefined, { sums: kind });
        const codec = compressor.params.className?.replace(/^Encrypting|Compressor$/g, '');
        if (codec === 'LZ4' && native().codecAvailable('LZ4'))
          t.truthy(stored.sums, `${options.class}: LZ4 runs in the addon here`);
        if (!stored.sums) continue;
        const lengths = stored.map((c) => c.length);
        t.deepEqual(
          [...stored.sums],
          stored.map((c) => checksum.update(c)),
          `${options.class} ${kind}`,
        );
        for (const framed of [false, true]) {
          const pass = await checksum.batch(stored, 12345, framed);
          t.deepEqual([...pass.sums], [...stored.sums]);
          t.is(checksum.fold(stored.sums, lengths, 12345, framed), pass.combined);
        }
        compressor.recycle(stored);
      }
      compressor.close();
    }
    provider.close();
  },
);

test(
  'Data.db chunk checksums and the digest are right whether they come from the encoding pass or ' +
    'from a pass of their own (chunks stored raw under min_compress_ratio)',
  async (t) => {
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const provider = new KeyProviders(keys.config);
    // Whole chunks alternately compressible and not, over several batches.
    const data = Buffer.concat(
      Array.from({ length: 150 }, (_, i) =>
        i % 3 === 0 ? crypto.randomBytes(16384) : Buffer.alloc(16384, `row ${i} `),
      ),
    );
    const tables = [
      { class: 'LZ4Compressor', chunk_length_kb: 16, min_compress_ratio: 1.1 },
      { class: 'LZ4Compressor', chunk_length_kb: 16 },
      {
        class: 'EncryptingLZ4Compressor',
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        chunk_length_kb: 16,
      },
    ];
    for (const [n, options] of tables.entries()) {
      const compressor = await compressorForTable(options, { keys: provider });
      const dir = tempDir('sums');
      const id = { dir, version: 'nb', generation: String(n + 1), format: 'big' as const };
      const writer = await SSTableDataWriter.create({
        id,
        params: compressor.params,
        compressor,
      });
      for (let at = 0; at < data.length; at += 50000)
        await writer.write(data.subarray(at, at + 50000));
      const result = await writer.finish();
      compressor.close();

      // Data.db is the chunks, each followed by its CRC32; the digest is the CRC32 of it all.
      const file = fs.readFileSync(path.join(dir, `nb-${n + 1}-big-Data.db`));
      const digest = fs.readFileSync(path.join(dir, `nb-${n + 1}-big-Digest.crc32`), 'utf8');
      t.is(digest, String(zlib.crc32(file)), options.class);
      const reader = await SSTableReader.open(
        { ...id, components: result.components },
        { keys: provider },
      );
      try {
        t.true((await reader.read(0, data.length)).equals(data));
        const report = await reader.verify('Digest.crc32');
        t.deepEqual(report.faults, []);
        t.is(report.chunks, 150);
      } finally {
        await reader.close();
      }
      // Under min_compress_ratio 1.1 a random chunk is stored raw (and its checksum cannot come
      // from the encoding pass): chunk 0 then opens Data.db as it is.
      t.is(file.subarray(0, 16384).equals(data.subarray(0, 16384)), n === 0, options.class);
    }
    provider.close();
  },
);

test('verify stops between batches once its signal is aborted, naming the file and chunk', async (t) => {
  const { provider, reader } = await randomLz4Reader('verify-abort', '6', 24);
  try {
    // Aborted while the first batch (64 chunks of 64 KiB) is under way: it stops before the next.
    const controller = new AbortController();
    const running = reader.verify('Digest.crc32', { signal: controller.signal });
    controller.abort();
    await t.throwsAsync(running, {
      code: 'ERR_TDE_CANCELLED',
      message: /nb-6-big-Data\.db: verify was interrupted at chunk 64 of 384/,
    });
    // Without a signal the same reader verifies to the end.
    t.deepEqual((await reader.verify('Digest.crc32')).faults, []);
  } finally {
    await reader.close();
    provider.close();
  }
});

test('a Data.db cut short while a reader has it open fails with ERR_TDE_IO naming it', async (t) => {
  // Each batch of 64 chunks reads about 4 MiB, on the thread pool.
  const { provider, id, reader } = await randomLz4Reader('cut-short', '8', 12);
  try {
    fs.truncateSync(path.join(id.dir, 'nb-8-big-Data.db'), 5 << 20);
    let batches = 0;
    const err = await t.throwsAsync(async () => {
      for await (const _ of reader.batches()) batches++;
    });
    t.is(batches, 1, 'the first batch lies before the cut');
    t.is((err as { code?: string }).code, 'ERR_TDE_IO');
    t.regex(
      err?.message ?? '',
      /nb-8-big-Data\.db ended at byte 5242880 while \d+ bytes from \d+ were being read: was it truncated while in use\?$/,
    );
  } finally {
    await reader.close();
    provider.close();
  }
});

test('a read started while the reader closes, or after, fails as a read of a closed file', async (t) => {
  // Encrypted: the read begun before close() must be decrypted before the key is wiped.
  const { provider, id, reader } = await randomLz4Reader('read-closing', '9', 8, true);
  try {
    const ahead = reader.readChunks(0, 64);
    const closing = reader.close();
    const closed = {
      code: 'ERR_TDE_IO',
      message: `cannot read ${path.join(id.dir, 'nb-9-big-Data.db')}: file closed`,
    };
    // Large (on the thread pool) and small (one chunk) reads alike.
    await t.throwsAsync(reader.readChunks(0, 64), closed);
    await t.throwsAsync(reader.readChunks(0, 1), closed);
    // The read begun before close() is one that close() waits for: it ends with the data.
    const chunks = await ahead;
    t.is(chunks.length, 64);
    t.is(chunks[63].length, 65536);
    await closing;
    await t.throwsAsync(reader.readChunks(0, 64), closed);
  } finally {
    await reader.close();
    provider.close();
  }
});
