#!/usr/bin/env node
/**
 * Each compressor class alone and with encryption, writing (compressBatch) and reading
 * (uncompressBatch) 64 KiB chunks of the benchmark data (bench/lib/sstable-gen.js: real corpus
 * partitions and encrypted commit log bytes, about 2:1 under LZ4), 8 MiB batches, all cores.
 * Compared in the same run:
 *   - the addon's codecs (system liblz4 and libz) against the npm ones (lz4-napi, Node's zlib,
 *     snappy), and Deflate in pako, pure JavaScript, on worker threads;
 *   - each encrypting class against the same class without encryption: the cost of the cipher.
 *
 *   node bench/codec.js [--quick] [--json FILE]
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const tde = require('../dist');
const { CODECS } = require('../dist/compression/codecs');
const { native } = require('../dist/native');
const { line, main, result, cores } = require('./lib/common');
const { period } = require('./lib/sstable-gen');

const CHUNK = 65536;
const BATCH = 128;

async function timeIt(fn, seconds) {
  await fn();
  let bytes = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    bytes += await fn();
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  return bytes / elapsed / 1e6;
}

/** Deflate in pako on worker threads: the way to keep a pure-JS codec off the event loop. */
class PakoPool {
  constructor(n) {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const pako = require(${JSON.stringify(require.resolve('pako'))});
      parentPort.on('message', (chunks) => {
        const out = chunks.map((c) => pako.deflate(c));
        parentPort.postMessage(out, out.map((o) => o.buffer));
      });`;
    this.workers = Array.from({ length: n }, () => new Worker(code, { eval: true }));
  }

  compress(chunks) {
    const per = Math.ceil(chunks.length / this.workers.length);
    return Promise.all(
      this.workers.map(
        (w, k) =>
          new Promise((resolve) => {
            w.once('message', resolve);
            w.postMessage(chunks.slice(k * per, (k + 1) * per));
          }),
      ),
    ).then((parts) => parts.flat());
  }

  close() {
    return Promise.all(this.workers.map((w) => w.terminate()));
  }
}

async function run({ quick = false, log = () => {} } = {}) {
  const seconds = quick ? 0.4 : 1.5;
  const data = await period();
  const chunks = [];
  for (let at = 0; chunks.length < BATCH; at = (at + CHUNK) % (data.length - CHUNK))
    chunks.push(data.subarray(at, at + CHUNK));
  const lengths = chunks.map((c) => c.length);
  const bytes = CHUNK * BATCH;
  const where = (i) => ({ prefix: `chunk ${i}` });
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-bench-codec-'));
  fs.chmodSync(keyDir, 0o700);
  tde.createKeyFile(keyDir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const keys = new tde.KeyProviders(tde.configFromObject({ system_key_directory: keyDir }));
  const cases = [];
  log(`\n== compressor classes: 64 KiB chunks, ${BATCH} per batch, ${cores()} cores\n`);

  const speed = async (compressor) => {
    const stored = await compressor.compressBatch(chunks);
    const write = await timeIt(async () => {
      compressor.recycle(await compressor.compressBatch(chunks));
      return bytes;
    }, seconds);
    const read = await timeIt(async () => {
      compressor.recycle(await compressor.uncompressBatch(stored, lengths, where));
      return bytes;
    }, seconds);
    return { write, read, ratio: bytes / stored.reduce((n, c) => n + c.length, 0) };
  };
  const npmSpeed = async (codec) => {
    const stored = await codec.compress(chunks);
    const write = await timeIt(async () => (await codec.compress(chunks), bytes), seconds);
    const read = await timeIt(async () => {
      const out = await codec.uncompress(stored, lengths, where);
      codec.recycle?.(out);
      return bytes;
    }, seconds);
    return { write, read };
  };

  const plain = {};
  for (const [cls, codec, lib] of [
    ['LZ4Compressor', 'LZ4', 'liblz4'],
    ['DeflateCompressor', 'Deflate', 'libz'],
    ['SnappyCompressor', 'Snappy', 'libsnappy'],
  ]) {
    if (quick && cls === 'SnappyCompressor') continue;
    const compressor = await tde.compressorForTable({ class: cls, chunk_length_kb: 64 });
    const s = await speed(compressor);
    plain[cls] = s;
    const npm = await npmSpeed(CODECS[codec]);
    const engine =
      native().codecAvailable(codec) && process.env.SSTABLE_TDE_NATIVE_CODECS !== '0' ? lib : 'npm';
    const npmName = { LZ4: 'lz4-napi', Deflate: "Node's zlib", Snappy: 'snappy (npm)' }[codec];
    for (const [dir, mbps, base] of [
      ['write', s.write, npm.write],
      ['read', s.read, npm.read],
    ]) {
      const c = result('codec', `${dir} ${cls} (${engine}), ${s.ratio.toFixed(2)}:1`, mbps, {
        name: `${dir} with ${npmName}`,
        mbps: base,
      });
      cases.push(c);
      log(line(c));
    }
    if (codec === 'Deflate' && !quick) {
      const pool = new PakoPool(cores());
      const pako = await timeIt(async () => (await pool.compress(chunks), bytes), seconds);
      await pool.close();
      const c = result('codec', `write Deflate in pako on ${cores()} worker threads`, pako, {
        name: "write with Node's zlib",
        mbps: npm.write,
      });
      cases.push(c);
      log(line(c));
    }
  }

  for (const [cls, base] of [
    ['EncryptingLZ4Compressor', 'LZ4Compressor'],
    ['EncryptingDeflateCompressor', 'DeflateCompressor'],
    ['EncryptingSnappyCompressor', 'SnappyCompressor'],
    ['Encryptor', 'LZ4Compressor'],
  ]) {
    if (!plain[base]) continue;
    const compressor = await tde.compressorForTable(
      {
        class: cls,
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: 128,
        chunk_length_kb: 64,
      },
      { keys },
    );
    const s = await speed(compressor);
    compressor.close();
    for (const [dir, mbps, b] of [
      ['write', s.write, plain[base].write],
      ['read', s.read, plain[base].read],
    ]) {
      const c = result('codec', `${dir} ${cls} AES-128-CBC`, mbps, {
        name: `${dir} ${base}`,
        mbps: b,
      });
      cases.push(c);
      log(line(c));
    }
  }
  keys.close();
  fs.rmSync(keyDir, { recursive: true, force: true });
  return cases;
}

module.exports = { run };
if (require.main === module) main({ run });
