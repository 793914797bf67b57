#!/usr/bin/env node
/**
 * Chunk cipher throughput: every transformation at 4, 16 and 64 KiB chunks, on one thread and on
 * all cores, each compared in the same run with
 *   (a) Node's crypto.createCipheriv, one cipher object per chunk, as a Node program would do it;
 *   (b) OpenSSL itself: one thread encrypting one continuous stream through the same EVP cipher
 *       (`openssl speed -evp` style), times the threads used.
 *
 *   node bench/cipher.js [--quick] [--json FILE]
 *
 * --quick measures AES only at 64 KiB. Prints a table, then one JSON document. Nothing here
 * passes or fails: targets are read off the ratios.
 *
 * Batches are measured two at a time in flight, as a storage process keeps them (one being
 * encrypted while the next is gathered), and their memory is recycled once "written", as the
 * SSTable writer does.
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');

const Benchmark = require('benchmark');

const tde = require('../dist');
const { native } = require('../dist/native');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const jsonFile = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;

const CORES = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
const BATCH_BYTES = 4 * 1024 * 1024;
const SIZES = quick ? [65536] : [4096, 16384, 65536];
const CIPHERS = [
  ['AES/CBC/PKCS5Padding', 128], ['AES/CBC/PKCS5Padding', 256], ['AES/ECB/PKCS5Padding', 128],
  ['AES/CTR/NoPadding', 128], ['AES/GCM/NoPadding', 128], ['AES/GCM/NoPadding', 256],
  ['DES/CBC/PKCS5Padding', 56], ['DESede/CBC/PKCS5Padding', 168], ['Blowfish/CBC/PKCS5Padding', 128],
  ['RC2/CBC/PKCS5Padding', 128],
].filter(([name]) => !quick || name.startsWith('AES'));

function measure(fn) {
  return new Promise((resolve, reject) => {
    const b = new Benchmark({
      defer: true,
      maxTime: quick ? 0.5 : 1,
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

function opensslStreamMBps(choice, key, size) {
  const spec = { evpName: choice.evpName, ivLength: choice.ivLength, padding: false, rc2KeyBits: choice.rc2KeyBits, tagLength: choice.tagLength };
  const rounds = Math.max(1, Math.floor(BATCH_BYTES / size));
  native().evpStreamSeconds(spec, key, size, rounds); // warm-up
  const times = [];
  for (let i = 0; i < 5; i++) times.push(native().evpStreamSeconds(spec, key, size, rounds));
  times.sort((a, b) => a - b);
  return (size * rounds) / times[2] / 1e6;
}

async function main() {
  const results = [];
  const mb = (bytes, seconds) => bytes / seconds / 1e6;
  process.stdout.write(`${os.cpus()[0].model}, ${CORES} cores, Node ${process.version}\n\n`);
  process.stdout.write('transformation              bits  chunk  threads   MB/s   node MB/s  x node  openssl MB/s  x openssl\n');

  for (const [name, bits] of CIPHERS) {
    const choice = tde.resolveCipher(name, bits);
    const key = crypto.randomBytes(choice.keyLength);
    const cipher = tde.createChunkCipher({ cipher_algorithm: name, secret_key_strength: bits, key });
    for (const size of SIZES) {
      const count = Math.max(1, Math.floor(BATCH_BYTES / size));
      const chunks = Array.from({ length: count }, () => crypto.randomBytes(size));
      const aads = choice.tagLength ? chunks.map(() => Buffer.alloc(46)) : undefined;
      const bytes = size * count;

      const node = nodeName(choice) ? mb(bytes, await measure(nodePerChunk(choice, key, chunks))) : undefined;
      const stream = opensslStreamMBps(choice, key, size);
      for (const threads of [...new Set([1, CORES])]) {
        native().setParallelism(threads);
        // One batch at a time on one thread; on all cores, two in flight (see above).
        const one = () => cipher.encryptBatch(chunks, undefined, aads).then((out) => cipher.recycle(out));
        const depth = threads === 1 ? 1 : 2;
        const ours = mb(depth * bytes, await measure(() => Promise.all(Array.from({ length: depth }, one))));
        const r = {
          name: `encrypt ${name} ${bits} ${size / 1024}KiB ${threads}t`,
          transformation: name, bits, chunk: size, threads,
          mbps: +ours.toFixed(1),
          baselines: {
            node_createCipheriv_per_chunk: node === undefined ? null : +node.toFixed(1),
            openssl_stream_times_threads: +(stream * threads).toFixed(1),
          },
          ratio_vs_node: node === undefined ? null : +(ours / node).toFixed(2),
          ratio_vs_openssl: +(ours / (stream * threads)).toFixed(2),
        };
        results.push(r);
        process.stdout.write(`${name.padEnd(27)} ${String(bits).padStart(4)} ${String(size / 1024).padStart(4)}K ${String(threads).padStart(7)} ${r.mbps.toFixed(0).padStart(7)} ${node === undefined ? '        n/a' : node.toFixed(0).padStart(11)} ${r.ratio_vs_node === null ? '    n/a' : r.ratio_vs_node.toFixed(2).padStart(7)} ${(stream * threads).toFixed(0).padStart(13)} ${r.ratio_vs_openssl.toFixed(2).padStart(10)}\n`);
      }
      native().setParallelism(CORES);
    }
    cipher.destroy();
  }

  const doc = { machine: { cpu: os.cpus()[0].model, cores: CORES, node: process.version }, results };
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(doc, null, 2));
  process.stdout.write('\n' + JSON.stringify(doc) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
