#!/usr/bin/env node
/**
 * Chunk cipher throughput: every transformation at 4, 16 and 64 KiB chunks, on one thread and on
 * all cores, each compared in the same run with
 *   - OpenSSL itself: one thread encrypting one continuous stream through the same EVP cipher
 *     (`openssl speed -evp` style, over as much memory as a batch), times the threads used;
 *   - Node's crypto.createCipheriv, one cipher object per chunk, as a Node program would do it.
 * AES-CBC is also measured with multi-buffer encryption turned off, to show what it brings, and
 * every AES case also through encryptSpans (a batch and its results as spans of one buffer, no
 * object per chunk), to show what the Buffer[] form costs the JS thread on small chunks.
 *
 *   node bench/cipher.js [--quick] [--json FILE]      (--quick: AES at 64 KiB only)
 *
 * On all cores two batches are kept in flight, as a storage process keeps them (one being
 * encrypted while the next is gathered), and their memory is recycled once "written", as the
 * SSTable writer does.
 */
'use strict';

const crypto = require('node:crypto');

const Benchmark = require('benchmark');

const tde = require('../dist');
const { native } = require('../dist/native');
const { cores, line, main, result } = require('./lib/common');

const BATCH_BYTES = 4 * 1024 * 1024;
const ALL_CIPHERS = [
  ['AES/CBC/PKCS5Padding', 128],
  ['AES/CBC/PKCS5Padding', 256],
  ['AES/ECB/PKCS5Padding', 128],
  ['AES/CTR/NoPadding', 128],
  ['AES/GCM/NoPadding', 128],
  ['AES/GCM/NoPadding', 256],
  ['DES/CBC/PKCS5Padding', 56],
  ['DESede/CBC/PKCS5Padding', 168],
  ['Blowfish/CBC/PKCS5Padding', 128],
  ['RC2/CBC/PKCS5Padding', 128],
];

function measure(fn, quick) {
  return new Promise((resolve, reject) => {
    const b = new Benchmark({
      defer: true,
      maxTime: quick ? 0.3 : 1,
      minSamples: 5,
      fn: (deferred) => fn().then(() => deferred.resolve(), reject),
    });
    b.on('complete', () => resolve(b.stats.mean)).on('error', (e) => reject(e.target.error));
    b.run({ async: true });
  });
}

/** Node's own name for a cipher, or undefined when Node's crypto lacks it (legacy ciphers). */
function nodeName(choice) {
  const name = choice.evpName.toLowerCase();
  return crypto.getCiphers().includes(name) ? name : undefined;
}

function nodePerChunk(choice, key, chunks) {
  const name = nodeName(choice);
  return async () => {
    for (const c of chunks) {
      const iv = choice.ivLength ? crypto.randomBytes(choice.ivLength) : null;
      const cipher = crypto.createCipheriv(name, key, iv);
      cipher.setAutoPadding(choice.padding === 'PKCS5Padding');
      if (choice.tagLength) cipher.setAAD(Buffer.alloc(46));
      cipher.update(c);
      cipher.final();
      if (choice.tagLength) cipher.getAuthTag();
    }
  };
}

/** MB/s of `threads` OpenSSL streams at once (all of them together). */
function opensslStreamMBps(choice, key, size, threads = 1) {
  const spec = {
    evpName: choice.evpName,
    ivLength: choice.ivLength,
    padding: false,
    rc2KeyBits: choice.rc2KeyBits,
    tagLength: choice.tagLength,
  };
  const rounds = Math.max(1, Math.floor(BATCH_BYTES / size));
  native().evpStreamSeconds(spec, key, size, rounds, threads); // warm-up
  const times = [];
  for (let i = 0; i < 5; i++)
    times.push(native().evpStreamSeconds(spec, key, size, rounds, threads));
  times.sort((a, b) => a - b);
  return (threads * size * rounds) / times[2] / 1e6;
}

/** Targets the issues set, as ratios against the baselines of the same run. */
function targets(name, bits, size, threads, all) {
  const t = {};
  if (name === 'AES/CBC/PKCS5Padding' && bits === 128 && threads === 1) t.openssl = 3;
  if (name === 'AES/CBC/PKCS5Padding' && bits === 128 && size === 65536 && threads === all)
    t.node = 2;
  if (/^AES\/(ECB|CTR|GCM)/.test(name) && threads === all) t.openssl = 0.85;
  return t;
}

async function run({ quick = false, log = () => {} } = {}) {
  const all = cores();
  const sizes = quick ? [65536] : [4096, 16384, 65536];
  const ciphers = ALL_CIPHERS.filter(([name]) => !quick || name.startsWith('AES'));
  const cases = [];
  log(`\n== chunk cipher: ${all} cores, ${BATCH_BYTES >> 20} MiB batches\n`);

  for (const [name, bits] of ciphers) {
    const choice = tde.resolveCipher(name, bits);
    const key = crypto.randomBytes(choice.keyLength);
    const cipher = tde.createChunkCipher({
      cipher_algorithm: name,
      secret_key_strength: bits,
      key,
    });
    for (const size of sizes) {
      const count = Math.max(1, Math.floor(BATCH_BYTES / size));
      // Views of one allocation, as upgradesstables hands chunks over (cut from a decoded region
      // of the source): the addon then takes the whole batch in one hand-over.
      const region = crypto.randomBytes(size * count);
      const chunks = Array.from({ length: count }, (_, i) =>
        region.subarray(i * size, (i + 1) * size),
      );
      const aadRegion = Buffer.alloc(46 * count);
      const aads = choice.tagLength
        ? chunks.map((_, i) => aadRegion.subarray(46 * i, 46 * (i + 1)))
        : undefined;
      // The same batch as spans (ChunkCipher.encryptSpans): no object per chunk either way.
      const spansOf = (data, each) => ({
        data,
        offsets: Float64Array.from({ length: count }, (_, i) => i * each),
        lengths: new Uint32Array(count).fill(each),
      });
      const spans = spansOf(region, size);
      const aadSpans = choice.tagLength ? spansOf(aadRegion, 46) : undefined;
      const bytes = size * count;

      const node = nodeName(choice)
        ? bytes / (await measure(nodePerChunk(choice, key, chunks), quick)) / 1e6
        : undefined;
      const stream = opensslStreamMBps(choice, key, size);
      // OpenSSL on every core at once, each thread its own stream: what the hardware gives.
      const streams = all > 1 ? opensslStreamMBps(choice, key, size, all) : stream;
      // Each AES case also through the spans form; AES-CBC also with multi-buffer off.
      const engines = [{ mb: undefined, form: 'buffers' }];
      if (name.startsWith('AES')) engines.push({ mb: undefined, form: 'spans' });
      if (name.startsWith('AES/CBC') && native().multiBuffer())
        engines.push({ mb: false, form: 'buffers' });
      for (const threads of [...new Set([1, all])]) {
        for (const { mb, form } of engines) {
          if (mb === false && threads !== 1) continue;
          if (mb !== undefined) native().setMultiBuffer(mb);
          native().setParallelism(threads);
          // One batch at a time on one thread; on all cores, a steady two in flight: each
          // measured step waits for the oldest batch and starts the next, as a writer does.
          const one =
            form === 'spans'
              ? () => cipher.encryptSpans(spans, aadSpans).then((out) => cipher.recycleSpans(out))
              : () =>
                  cipher.encryptBatch(chunks, undefined, aads).then((out) => cipher.recycle(out));
          const depth = threads === 1 ? 1 : 2;
          const inflight = Array.from({ length: depth - 1 }, one);
          const step = () => {
            inflight.push(one());
            return inflight.shift();
          };
          const mbps = bytes / (await measure(step, quick)) / 1e6;
          await Promise.all(inflight);
          const t = targets(name, bits, size, threads, all);
          const label =
            `encrypt ${name} ${bits} ${size / 1024} KiB, ` +
            `${threads} thread${threads > 1 ? 's' : ''}` +
            (mb === false ? ', multi-buffer off' : '') +
            (form === 'spans' ? ', spans' : '');
          const c = result(
            'cipher',
            label,
            mbps,
            { name: `OpenSSL single stream x${threads}`, mbps: stream * threads },
            mb === false ? undefined : t.openssl,
            {
              transformation: name,
              bits,
              chunkBytes: size,
              threads,
              multiBuffer: mb ?? null,
              form,
              opensslConcurrent:
                threads > 1
                  ? {
                      name: `OpenSSL, ${threads} streams at once`,
                      mbps: Math.round(streams),
                      ratio: Math.round((mbps / streams) * 100) / 100,
                    }
                  : null,
              node:
                node === undefined
                  ? null
                  : {
                      name: 'Node createCipheriv per chunk',
                      mbps: Math.round(node),
                      ratio: Math.round((mbps / node) * 100) / 100,
                      ...(t.node ? { target: { ratio: t.node, met: mbps / node >= t.node } } : {}),
                    },
            },
          );
          cases.push(c);
          log(line(c));
        }
        native().setMultiBuffer(true);
      }
      native().setParallelism(all);
    }
    cipher.destroy();
  }
  return cases;
}

module.exports = { run };
if (require.main === module) main({ run });
