/**
 * The plugin as a storage process uses it, with local system keys: openPlugin, writers and
 * readers, metrics and events, key rotation, commit log and hints, close, several instances and
 * worker threads.
 */
import { once } from 'node:events';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';

import test from 'ava';

import { readSegment } from '../src/commitlog/segment';
import { readHintsFile, hintsFileNames } from '../src/commitlog/hints';
import { createKeyFile, readKeyFile } from '../src/keys/key-file';
import { openPlugin, parseCompressionInfo, TdePlugin } from '../src/index';
import type { IntegrityFailureEvent, KeyFetchedEvent, KeyRotatedEvent } from '../src/index';
import { cli, makeDataDir, makeKeySetup, ROOT, tempDir } from './helpers';

const CBC = {
  class: 'EncryptingLZ4Compressor',
  cipher_algorithm: 'AES/CBC/PKCS5Padding',
  secret_key_strength: 128,
  chunk_length_kb: 4,
};
const GCM = { ...CBC, cipher_algorithm: 'AES/GCM/NoPadding', secret_key_strength: 256 };

type Id = { dir: string; version: string; generation: string; format: 'big' };

/** Rows of a pretend memtable, serialized: compressible, and different for each seed. */
function memtable(rows: number, seed: number): Buffer {
  return Buffer.concat(
    Array.from({ length: rows }, (_, i) =>
      Buffer.from(`partition-${seed}-${i}|name=${'n'.repeat(i % 40)}|value=${i * 7919 + seed};`),
    ),
  );
}

const SRC = path.join(ROOT, 'src/index.ts');

function compressionInfo(dir: string, generation: number) {
  const file = path.join(dir, `nb-${generation}-big-CompressionInfo.db`);
  return parseCompressionInfo(fs.readFileSync(file), file, true);
}

function keyDir(): { dir: string; config: Record<string, unknown> } {
  const { dir } = makeKeySetup();
  createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  createKeyFile(dir, 'gcm_key', 'AES/GCM/NoPadding', 256);
  return { dir, config: { system_key_directory: dir } };
}

async function flush(
  plugin: TdePlugin,
  dir: string,
  generation: string,
  data: Buffer,
  options: Record<string, unknown> = CBC,
): Promise<Id> {
  const id = { dir, version: 'nb', generation, format: 'big' as const };
  const w = await plugin.createWriter(id, options);
  for (let at = 0; at < data.length; at += 1000) await w.write(data.subarray(at, at + 1000));
  await w.writeComponent('Index.db', Buffer.from(`index of ${generation}: partition-0 at 0`));
  await w.finish();
  return id;
}

test(
  'a flush is written encrypted, read back ' + 'by position, and every step is counted',
  async (t) => {
    const keys = keyDir();
    const plugin = await openPlugin({ config: keys.config });
    const fetched: KeyFetchedEvent[] = [];
    plugin.on('keyFetched', (e) => fetched.push(e));
    try {
      const dir = tempDir('plugin-flush');
      const data = memtable(2000, 1);
      const id = await flush(plugin, dir, '1', data);
      const stored = fs.readFileSync(path.join(dir, 'nb-1-big-Data.db'));
      t.false(stored.includes(Buffer.from('partition-1-5|')), 'no plain row on disk');
      const index = fs.readFileSync(path.join(dir, 'nb-1-big-Index.db'));
      t.false(index.includes(Buffer.from('partition-0')), 'index encrypted');

      const chunks = Math.ceil(data.length / 4096);
      let m = plugin.metrics();
      t.is(m.encrypted.chunks, chunks);
      t.is(m.encrypted.bytes, data.length + 'index of 1: partition-0 at 0'.length);
      t.is(m.encrypted.pages, 1);
      t.is(m.keys.fetches, 1);
      t.deepEqual(
        fetched.map((e) => [e.source, e.key]),
        [['local', 'system_key']],
      );

      const reader = await plugin.openReader(id);
      try {
        for (const [pos, len] of [
          [0, 20],
          [4090, 12],
          [30000, 5000],
          [data.length - 3, 3],
        ]) {
          const bytes = await reader.read(pos, len);
          t.true(bytes.equals(data.subarray(pos, pos + len)), `read(${pos}, ${len})`);
        }
        const component = await reader.openComponent('Index.db');
        t.is((await component.readAll()).toString(), 'index of 1: partition-0 at 0');
        await component.close();
      } finally {
        await reader.close();
      }
      m = plugin.metrics();
      // Four reads: chunk 0, chunks 0-1, chunks 7-8, the last chunk. The index's one page is read
      // on open (for its plain size) and again by readAll.
      t.is(m.decrypted.chunks, 1 + 2 + 2 + 1);
      t.is(m.decrypted.pages, 2);
      t.is(m.keys.fetches, 1, 'the key file was read once');
      t.true(m.keys.cacheHits >= 1);
      t.is(m.integrityFailures, 0);
      t.is(m.kmip.requests, 0);
    } finally {
      await plugin.close();
    }
  },
);

test(
  'rotateKey with local keys: a new key file, ' + 'new SSTables use it, old ones keep reading',
  async (t) => {
    const keys = keyDir();
    const plugin = await openPlugin({ config: keys.config });
    try {
      const rotated: KeyRotatedEvent[] = [];
      plugin.on('keyRotated', (e) => rotated.push(e));
      const dir = tempDir('plugin-rotate');
      const old = memtable(500, 2);
      const first = await flush(plugin, dir, '1', old);

      const r = await plugin.rotateKey(CBC);
      t.is(r.key, 'system_key-2');
      t.is(r.previous, 'system_key');
      t.is(r.tableOptions.system_key_file, 'system_key-2');
      t.deepEqual(
        rotated.map((e) => [e.source, e.previous, e.key]),
        [['local', 'system_key', 'system_key-2']],
      );
      t.is(fs.statSync(path.join(keys.dir, 'system_key-2')).mode & 0o777, 0o600);
      const again = await plugin.rotateKey(r.tableOptions);
      t.is(again.key, 'system_key-3', 'a second rotation takes the next name');

      const fresh = memtable(500, 3);
      const second = await flush(plugin, dir, '2', fresh, r.tableOptions);
      t.is(compressionInfo(dir, 2).options.system_key_file, 'system_key-2');
      for (const [id, data] of [
        [first, old],
        [second, fresh],
      ] as const) {
        const reader = await plugin.openReader(id);
        t.true((await reader.read(0, data.length)).equals(data));
        await reader.close();
      }
      t.is(plugin.metrics().keys.rotations, 2);
    } finally {
      await plugin.close();
    }
  },
);

test(
  'an altered GCM chunk is one integrity ' + 'failure, reported with its file and chunk',
  async (t) => {
    const keys = keyDir();
    const plugin = await openPlugin({ config: keys.config });
    const seen: IntegrityFailureEvent[] = [];
    plugin.on('integrityFailure', (e) => seen.push(e));
    try {
      const dir = tempDir('plugin-gcm');
      const data = memtable(1500, 4);
      const id = await flush(plugin, dir, '1', data, { ...GCM, system_key_file: 'gcm_key' });

      // Alter chunk 1 and give it a matching checksum, so only the GCM tag can tell.
      const dataFile = path.join(dir, 'nb-1-big-Data.db');
      const info = compressionInfo(dir, 1);
      const bytes = fs.readFileSync(dataFile);
      const [start, end] = [info.chunkOffsets[1], info.chunkOffsets[2] - 4];
      bytes[start + 20] ^= 1;
      bytes.writeUInt32BE(zlib.crc32(bytes.subarray(start, end)) >>> 0, end);
      fs.writeFileSync(dataFile, bytes);

      const reader = await plugin.openReader(id);
      const report = await reader.verify();
      await reader.close();
      t.deepEqual(
        report.faults.map((f) => [f.code, f.chunk]),
        [['ERR_TDE_INTEGRITY', 1]],
      );
      // verify retried the batch chunk by chunk: still one failure.
      t.is(plugin.metrics().integrityFailures, 1);
      t.is(seen.length, 1);
      t.is(seen[0].code, 'ERR_TDE_INTEGRITY');
      t.is(seen[0].file, dataFile);
      t.is(seen[0].chunk, 1);
      t.is(seen[0].key, 'gcm_key');
    } finally {
      await plugin.close();
    }
  },
);

test(
  'close() is idempotent, aborts unfinished writers and wipes keys; the plugin then refuses ' +
    'work',
  async (t) => {
    const keys = keyDir();
    const plugin = await openPlugin({ config: keys.config });
    const dir = tempDir('plugin-close');
    const compressor = await plugin.compressorFor(CBC);
    const id: Id = { dir, version: 'nb', generation: '9', format: 'big' };
    const writer = await plugin.createWriter(id, CBC);
    await writer.write(memtable(100, 5));
    const done = plugin.close();
    t.is(plugin.close(), done, 'the same promise');
    await done;
    t.true(plugin.closed);

    t.deepEqual(fs.readdirSync(dir), [], 'the unfinished SSTable was removed');
    await t.throwsAsync(() => compressor.compressBatch([Buffer.from('late')]), {
      code: 'ERR_TDE_CIPHER_DESTROYED',
    });
    await t.throwsAsync(() => plugin.compressorFor(CBC), {
      code: 'ERR_TDE_CLOSED',
      message: /open a new one/,
    });
    await t.throwsAsync(() => plugin.openReader(id), { code: 'ERR_TDE_CLOSED' });
  },
);

test('abort() never removes a finished SSTable; a finish that failed is cleaned up', async (t) => {
  const plugin = await openPlugin({ config: keyDir().config });
  const dir = tempDir('plugin-abort-after');
  const data = memtable(500, 3);
  const files = (g: string) => fs.readdirSync(dir).filter((f) => f.startsWith(`nb-${g}-`));
  const readBack = async (g: string) => {
    const reader = await plugin.openReader({ dir, version: 'nb', generation: g, format: 'big' });
    try {
      return await reader.read(0, data.length);
    } finally {
      await reader.close();
    }
  };
  try {
    // abort() after finish(): nothing removed.
    const a = await plugin.createWriter(
      { dir, version: 'nb', generation: '1', format: 'big' },
      CBC,
    );
    await a.write(data);
    await a.finish();
    await a.abort();
    t.is(files('1').length, 3);
    t.true((await readBack('1')).equals(data));

    // finish() and abort() at once: the finish wins, and both say so truthfully.
    const b = await plugin.createWriter(
      { dir, version: 'nb', generation: '2', format: 'big' },
      CBC,
    );
    await b.write(data);
    const settled = await Promise.allSettled([b.finish(), b.abort()]);
    t.deepEqual(
      settled.map((r) => r.status),
      ['fulfilled', 'fulfilled'],
    );
    t.true((await readBack('2')).equals(data));

    // A finish that fails (its CompressionInfo.db is in the way) leaves its Data.db until the
    // plugin's close() removes it; the file in the way is not the writer's and stays.
    const c = await plugin.createWriter(
      { dir, version: 'nb', generation: '3', format: 'big' },
      CBC,
    );
    await c.write(data);
    fs.writeFileSync(path.join(dir, 'nb-3-big-CompressionInfo.db'), 'not mine');
    await t.throwsAsync(() => c.finish(), { code: 'ERR_TDE_IO', message: /already exists/ });
    t.true(files('3').includes('nb-3-big-Data.db'));
  } finally {
    await plugin.close();
  }
  t.deepEqual(files('3'), ['nb-3-big-CompressionInfo.db']);
  t.is(files('1').length + files('2').length, 6);
});

test('createWriter refuses non-object options and a generation past a Java int', async (t) => {
  const plugin = await openPlugin({ config: keyDir().config });
  const dir = tempDir('plugin-refused');
  try {
    const id = { dir, version: 'nb', generation: '1', format: 'big' as const };
    await t.throwsAsync(() => plugin.createWriter(id, null as never), {
      code: 'ERR_TDE_BAD_OPTION',
      message: /must be an object such as \{ class: 'LZ4Compressor' \}, not null/,
    });
    await t.throwsAsync(() => plugin.createWriter({ ...id, generation: '2147483648' }, CBC), {
      code: 'ERR_TDE_BAD_SSTABLE_NAME',
      message: /generation 2147483648 is past 2147483647/,
    });
    t.deepEqual(fs.readdirSync(dir), []);
  } finally {
    await plugin.close();
  }
});

test('finish() takes in components being written; a second finish() harms nothing', async (t) => {
  const plugin = await openPlugin({ config: keyDir().config });
  const dir = tempDir('plugin-finish-races');
  const data = memtable(3000, 9);
  const index = crypto.randomBytes(8 << 20);
  try {
    const id = { dir, version: 'nb', generation: '1', format: 'big' as const };
    const w = await plugin.createWriter(id, CBC);
    const writing = w.write(data);
    const component = w.writeComponent('Index.db', index);
    // Neither awaited: finish() must take both in, and a second finish() must not disturb it.
    const [first, second] = await Promise.allSettled([w.finish(), w.finish()]);
    await Promise.all([writing, component]);
    t.is(first.status, 'fulfilled', String((first as PromiseRejectedResult).reason));
    t.is(second.status, 'rejected');
    t.regex(String((second as PromiseRejectedResult).reason), /finish\(\) was called already/);
    t.is(compressionInfo(dir, 1).options.encrypted_components, 'Index.db');
    const reader = await plugin.openReader(id);
    try {
      t.true((await reader.read(0, data.length)).equals(data));
      const c = await reader.openComponent('Index.db');
      t.true((await c.readAll()).equals(index));
      await c.close();
    } finally {
      await reader.close();
    }
  } finally {
    await plugin.close();
  }
});

test('close() waits for calls in flight, then closes what they made', async (t) => {
  const plugin = await openPlugin({ config: keyDir().config });
  const dir = tempDir('plugin-inflight');
  const compressing = plugin.compressorFor(CBC);
  const writing = plugin.createWriter({ dir, version: 'nb', generation: '1', format: 'big' }, CBC);
  await plugin.close();
  const compressor = await compressing;
  await t.throwsAsync(() => compressor.compressBatch([Buffer.from('late')]), {
    code: 'ERR_TDE_CIPHER_DESTROYED',
  });
  const writer = await writing;
  await t.throwsAsync(() => writer.write(Buffer.from('late')), { message: /after abort\(\)/ });
  t.deepEqual(fs.readdirSync(dir), [], 'the writer was aborted by the shutdown');
});

test(
  'commit log segments and hints through the ' + 'plugin are encrypted, readable, and counted',
  async (t) => {
    const keys = keyDir();
    const systemInfo = {
      enabled: true,
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
    };
    const config = { ...keys.config, system_info_encryption: systemInfo };
    const plugin = await openPlugin({ config });
    const dir = tempDir('plugin-commitlog');
    const resolve = async (alias: string) => readKeyFile(path.join(keys.dir, alias))[0].key;
    try {
      const segment = await plugin.commitLogWriter(path.join(dir, 'CommitLog-7-1.log'), 1n);
      const entries = Array.from({ length: 50 }, (_, i) =>
        Buffer.from(`mutation ${i} ${'x'.repeat(i)}`),
      );
      for (const e of entries.slice(0, 30)) segment.append(e);
      t.is(segment.pendingEntries().length, 30);
      await segment.sync();
      t.is(segment.unsynced, 0);
      for (const e of entries.slice(30)) segment.append(e);
      await segment.close();

      const read: Buffer[] = [];
      const report = await readSegment(segment.file, resolve, (e) => read.push(e));
      t.true(report.complete);
      t.is(report.keyAlias, 'system_key');
      t.deepEqual(read.map(String), entries.map(String));
      t.false(fs.readFileSync(segment.file).includes(Buffer.from('mutation 1')));

      const descriptor = {
        hostId: '4fc9a1b2-0000-4000-8000-000000000001',
        timestamp: 1700000000000,
      };
      const names = hintsFileNames(dir, descriptor.hostId, descriptor.timestamp);
      const hints = await plugin.hintsWriter(names, descriptor);
      await hints.write([Buffer.from('hint one'), Buffer.from('hint two')]);
      await hints.close();
      const got: string[] = [];
      await readHintsFile(names, resolve, (h) => got.push(String(h)));
      t.deepEqual(got, ['hint one', 'hint two']);

      const m = plugin.metrics();
      t.deepEqual(m.commitLog, { entries: 50, bytes: entries.reduce((n, e) => n + e.length, 0) });
      t.deepEqual(m.hints, { hints: 2, bytes: 16 });
    } finally {
      await plugin.close();
    }
  },
);

test('openPlugin validates its options and the config, and names what is wrong', async (t) => {
  await t.throwsAsync(() => openPlugin({} as never), {
    code: 'ERR_TDE_INVALID_ARGUMENT',
    message: /needs \{ config \}/,
  });
  await t.throwsAsync(() => openPlugin({ config: {}, keyStatePollMillis: -5 }), {
    code: 'ERR_TDE_CONFIG',
    message: /keyStatePollMillis/,
  });
  await t.throwsAsync(() => openPlugin({ config: {}, onKeyRevoked: 'ignore' as never }), {
    code: 'ERR_TDE_CONFIG',
    message: /"stop" or "warn"/,
  });
  await t.throwsAsync(() => openPlugin({ config: { system_key_dir: '/x' } }), {
    code: 'ERR_TDE_CONFIG',
    message: /did you mean "system_key_directory"/,
  });
  // system_info_encryption's key is loaded at start: a missing key file stops it.
  const { dir } = makeKeySetup();
  const err = await t.throwsAsync(() =>
    openPlugin({
      config: {
        system_key_directory: dir,
        system_info_encryption: { enabled: true, system_key_file: 'nope' },
      },
    }),
  );
  t.regex(err!.message, /^cannot start: system_info_encryption's key cannot be loaded: .*nope/);
});

test(
  'two plugins in one process and one in each of two worker threads work apart and close ' +
    'cleanly',
  async (t) => {
    const a = keyDir();
    const b = keyDir();
    const script = `
    require('tsx/cjs');
    const { parentPort, workerData } = require('node:worker_threads');
    const { openPlugin } = require(workerData.src);
    (async () => {
      const plugin = await openPlugin({ config: { system_key_directory: workerData.keys } });
      const id = { dir: workerData.dir, version: 'nb', generation: '1', format: 'big' };
      const w = await plugin.createWriter(id, workerData.options);
      const data = Buffer.alloc(50000, workerData.fill);
      await w.write(data);
      await w.finish();
      const r = await plugin.openReader(id);
      const back = await r.read(0, data.length);
      await r.close();
      const m = plugin.metrics();
      await plugin.close();
      parentPort.postMessage({ same: back.equals(data), chunks: m.encrypted.chunks });
    })().catch((err) => parentPort.postMessage({ error: err.code + ': ' + err.message }));
  `;
    const workers = [1, 2].map((fill) => {
      const dir = tempDir('plugin-worker');
      const workerData = { src: SRC, keys: a.dir, dir, options: CBC, fill };
      const w = new Worker(script, { eval: true, workerData });
      type Result = { same?: boolean; chunks?: number; error?: string };
      return once(w, 'message').then(([msg]) => msg as Result);
    });

    const [p, q] = await Promise.all([a, b].map((k) => openPlugin({ config: k.config })));
    const dir = tempDir('plugin-two');
    const data = memtable(800, 6);
    const idP = await flush(p, dir, '1', data);
    const idQ = await flush(q, dir, '2', data);
    // Each plugin has its own key directory: q cannot read p's SSTable (its key file differs).
    await t.throwsAsync(() => q.openReader(idP), { code: 'ERR_TDE_WRONG_KEY' });
    const reader = await p.openReader(idP);
    t.true((await reader.read(0, data.length)).equals(data));
    await reader.close();
    t.is(p.metrics().encrypted.chunks, Math.ceil(data.length / 4096));
    t.is(q.metrics().encrypted.chunks, Math.ceil(data.length / 4096), 'counters are per plugin');
    await Promise.all([p.close(), q.close()]);
    t.truthy(idQ);

    for (const result of await Promise.all(workers)) {
      t.is(result.error, undefined);
      t.true(result.same);
      t.is(result.chunks, Math.ceil(50000 / 4096));
    }
  },
);

test(
  'a worker thread terminated with its plugin open and a flush running does not bring the ' +
    'process down',
  async (t) => {
    const a = keyDir();
    const script = `
    require('tsx/cjs');
    const { parentPort, workerData } = require('node:worker_threads');
    const { openPlugin } = require(workerData.src);
    (async () => {
      const plugin = await openPlugin({ config: { system_key_directory: workerData.keys } });
      const id = { dir: workerData.dir, version: 'nb', generation: '1', format: 'big' };
      const w = await plugin.createWriter(id, workerData.options);
      w.write(Buffer.alloc(8 << 20, 3));
      parentPort.postMessage('writing');
    })();
  `;
    for (let round = 0; round < 3; round++) {
      const workerData = { src: SRC, keys: a.dir, dir: tempDir('plugin-term'), options: CBC };
      const w = new Worker(script, { eval: true, workerData });
      await once(w, 'message');
      await w.terminate();
    }
    // The main thread still encrypts.
    const plugin = await openPlugin({ config: a.config });
    const c = await plugin.compressorFor(CBC);
    t.is((await c.compressBatch([crypto.randomBytes(100)])).length, 1);
    await plugin.close();
  },
);

test('verify --metrics prints the counters; with --json they are in the report', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_nb_simple');
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const schema = path.join(tempDir('schema'), 'schema.cql');
  fs.writeFileSync(
    schema,
    'ALTER TABLE legacy_tables.legacy_nb_simple WITH compression = ' +
      "{'class': 'EncryptingLZ4Compressor'};",
  );
  const common = ['--data-dir', dataDir, '--config', keys.configFile, '--metrics'];
  const up = await cli('upgradesstables', '--schema', schema, ...common);
  t.is(up.code, 0, up.stderr);
  // Data.db's chunks, and the pages of Index.db, Summary.db and Statistics.db.
  t.regex(up.stderr, /^encrypted +[1-9]\d* chunks?, [1-9]\d* pages, [1-9]\d* bytes$/m);
  t.regex(up.stderr, /^keys +1 fetched \(0 failed\)/m);

  const text = await cli('verify', ...common);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stderr, /^decrypted +[1-9]\d* chunks?, /m);
  t.regex(text.stderr, /^integrity failures 0$/m);
  const json = await cli('verify', ...common, '--json');
  const report = JSON.parse(json.stdout);
  t.is(report.metrics.encrypted.chunks, 0);
  // Every chunk of every SSTable, once; the encrypted index and metadata pages besides.
  const chunks = report.sstables.reduce((n: number, s: { chunks: number }) => n + s.chunks, 0);
  t.is(report.metrics.decrypted.chunks, chunks);
  t.true(report.metrics.decrypted.pages > 0);

  // A storage process starting on that data directory checks it through the plugin.
  const plugin = await openPlugin({ config: keys.configFile });
  try {
    const opened = await plugin.openDataDirectory(dataDir);
    t.deepEqual(opened.unreadable, []);
    t.is(opened.sstables.length, 1);
    t.is(plugin.metrics().decrypted.chunks, 1, 'the first chunk of the SSTable was read');
  } finally {
    await plugin.close();
  }
});
