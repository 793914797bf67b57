import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { Worker } from 'node:worker_threads';

import test from 'ava';
import fc from 'fast-check';

import { checksumFor } from '../src/checksum';
import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { NATIVE_ERROR_CODES } from '../src/errors';
import { native } from '../src/native';
import { readChecked } from '../src/util/files';
import { ROOT } from './helpers';

test(
  'error codes declared in native/errors.h are ' + 'exactly those TypeScript lists as native',
  (t) => {
    const header = fs.readFileSync(path.join(ROOT, 'native/errors.h'), 'utf8');
    const fromHeader = [...header.matchAll(/^\s*X\((ERR_TDE_[A-Z_]+)\)/gm)].map((m) => m[1]);
    t.deepEqual(fromHeader, [...NATIVE_ERROR_CODES]);
    t.deepEqual(native().errorCodes(), [...NATIVE_ERROR_CODES]);
  },
);

test(
  "legacy ciphers come from the addon's private library context, leaving Node's crypto " +
    'unchanged',
  (t) => {
    for (const name of ['BF-CBC', 'RC2-CBC', 'DES-CBC', 'DES-EDE3-CBC']) {
      t.true(native().cipherAvailable(name), name);
    }
    const nodeCiphers = crypto.getCiphers();
    t.false(nodeCiphers.includes('bf-cbc'));
    t.false(nodeCiphers.includes('rc2-cbc'));
  },
);

test('an unknown OpenSSL cipher name is reported as unavailable, not a crash', (t) => {
  t.false(native().cipherAvailable('NOT-A-CIPHER'));
});

test('destroy() makes every later call fail with ERR_TDE_CIPHER_DESTROYED', async (t) => {
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    key: crypto.randomBytes(16),
  });
  await c.encrypt(Buffer.from('x'));
  c.destroy();
  t.true(c.destroyed);
  await t.throwsAsync(() => c.encrypt(Buffer.from('x')), { code: 'ERR_TDE_CIPHER_DESTROYED' });
  t.throws(() => c.encryptSync(Buffer.from('x')), { code: 'ERR_TDE_CIPHER_DESTROYED' });
});

test('destroy() during a running batch lets the batch finish with correct output', async (t) => {
  const key = crypto.randomBytes(16);
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    key,
  });
  const chunks = Array.from({ length: 64 }, () => crypto.randomBytes(65536));
  const pending = c.encryptBatch(chunks);
  c.destroy();
  const out = await pending;
  const d = crypto.createDecipheriv('aes-128-cbc', key, out[63].subarray(0, 16));
  t.true(Buffer.concat([d.update(out[63].subarray(16)), d.final()]).equals(chunks[63]));
});

/**
 * Runs Node in a child process and waits without blocking this one's event loop, which another
 * test here watches for ticks while its batch runs.
 */
function nodeChild(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, timeout: 120_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

// Serial: another test's synchronous set-up, run while this batch is on the pool, would hold
// the event loop and be taken for the batch blocking it.
test.serial(
  'a batch runs off the event loop: timers ' + 'fire while a large batch is encrypting',
  async (t) => {
    const c = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 256,
      key: crypto.randomBytes(32),
    });
    const chunks = Array.from({ length: 512 }, () => Buffer.alloc(65536, 7));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = Date.now();
    await c.encryptBatch(chunks);
    clearInterval(timer);
    const elapsed = Date.now() - started;
    c.destroy();
    // 32 MiB takes tens of milliseconds; a blocked loop would see no tick at all.
    t.true(elapsed < 5 || ticks > 0, `elapsed ${elapsed} ms, ticks ${ticks}`);
  },
);

test('the addon loads and encrypts in worker threads, several at once', async (t) => {
  const script =
    `
    require('tsx/cjs');
    const { parentPort, workerData } = require('node:worker_threads');
    const { createChunkCipher } = require(workerData.src);
    const c = createChunkCipher({ cipher_algorithm: 'AES/ECB/PKCS5Padding', ` +
    `secret_key_strength: 128, key: Buffer.alloc(16, workerData.n) });
    c.encryptBatch([Buffer.from('hello')]).then((out) => { c.destroy(); ` +
    `parentPort.postMessage(out[0].toString('hex')); });
  `;
  const results = await Promise.all(
    [1, 2, 3].map(
      (n) =>
        new Promise<string>((resolve, reject) => {
          const w = new Worker(script, {
            eval: true,
            workerData: { n, src: path.join(ROOT, 'src/index.ts') },
          });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    ),
  );
  for (const [i, hex] of results.entries()) {
    const e = crypto.createCipheriv('aes-128-ecb', Buffer.alloc(16, i + 1), null);
    t.is(hex, Buffer.concat([e.update('hello'), e.final()]).toString('hex'));
  }
});

test('adler32 matches the reference values', (t) => {
  t.is(native().adler32(Buffer.from('Wikipedia')), 0x11e60398);
  t.is(native().adler32(Buffer.alloc(0)), 1);
  // Long input exercises the deferred modulo; split input must continue exactly.
  const big = crypto.randomBytes(100000);
  t.is(
    native().adler32(big.subarray(50000), native().adler32(big.subarray(0, 50000))),
    native().adler32(big),
  );
});

test(
  'buffers transferred away while their batch runs do not crash the process; the batch ' +
    'completes',
  async (t) => {
    const c = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      key: crypto.randomBytes(16),
    });
    const chunks = Array.from({ length: 32 }, () => Buffer.from(crypto.randomBytes(1 << 20)));
    const pending = c.encryptBatch(chunks);
    const moved = structuredClone(chunks[3].buffer, { transfer: [chunks[3].buffer] });
    t.is(chunks[3].length, 0, 'the buffer was detached');
    // Churn the heap so freed memory, if any, would be reused.
    for (let i = 0; i < 64; i++) Buffer.alloc(1 << 20, i);
    const out = await pending;
    t.is(out.length, 32);
    t.is(out[4].length, 16 + (1 << 20) + 16);
    t.is((moved as ArrayBuffer).byteLength, 1 << 20);
    c.destroy();
  },
);

test(
  'a worker thread terminated while its ' + 'batch runs does not bring the process down',
  async (t) => {
    const script =
      `
    require('tsx/cjs');
    const { parentPort, workerData } = require('node:worker_threads');
    const { createChunkCipher } = require(workerData.src);
    const c = createChunkCipher({ cipher_algorithm: 'AES/CBC/PKCS5Padding', ` +
      `secret_key_strength: 256, key: Buffer.alloc(32, 1) });
    const chunks = Array.from({ length: 256 }, () => Buffer.alloc(1 << 18, 7));
    c.encryptBatch(chunks);
    parentPort.postMessage('queued');
  `;
    for (let round = 0; round < 5; round++) {
      const w = new Worker(script, {
        eval: true,
        workerData: { src: path.join(ROOT, 'src/index.ts') },
      });
      await new Promise((resolve) => w.once('message', resolve));
      await w.terminate();
    }
    t.pass('still alive after five terminated workers');
  },
);

test(
  "checksum batches (CRC32 by carry-less multiplication, Adler-32) equal zlib's, for any " +
    'length and alignment',
  async (t) => {
    const crc = checksumFor('crc32');
    const adler = checksumFor('adler32');
    const lengths = [
      0,
      1,
      15,
      16,
      63,
      64,
      127,
      128,
      129,
      255,
      1000,
      4096,
      65536,
      65537,
      (1 << 20) + 3,
      (3 << 20) + 17,
    ];
    for (const len of lengths) {
      for (const offset of [0, 1, 7]) {
        const b = crypto.randomBytes(len + offset).subarray(offset);
        const start = crypto.randomBytes(4).readUInt32BE(0);
        const r = await crc.batch([b, b.subarray(0, len >> 1)], start);
        t.is(r.sums[0], zlib.crc32(b), `crc32 of ${len} bytes at +${offset}`);
        t.is(r.sums[1], zlib.crc32(b.subarray(0, len >> 1)));
        // (Node's zlib.crc32 gives 0 for a zero-length buffer with no memory behind it, whatever
        // the starting value; a CRC over nothing is the starting value.)
        t.is(
          r.combined,
          len === 0 ? start : zlib.crc32(b.subarray(0, len >> 1), zlib.crc32(b, start)),
        );
        const a = await adler.batch([b], 1);
        t.is(a.sums[0], native().adler32(b), `adler32 of ${len} bytes`);
      }
    }
    // Framed: each buffer followed by its checksum, big-endian, as Data.db stores chunks.
    const chunks = [crypto.randomBytes(5000), crypto.randomBytes(300)];
    const framed = await crc.batch(chunks, 0, true);
    const expect = Buffer.concat(
      chunks.flatMap((c) => {
        const s = Buffer.alloc(4);
        s.writeUInt32BE(zlib.crc32(c));
        return [c, s];
      }),
    );
    t.is(framed.combined, zlib.crc32(expect));
  },
);

test('chunk spans outside their buffer are refused before any thread reads them', async (t) => {
  const data = Buffer.alloc(4096, 1);
  const spans = (offset: number, length: number) => ({
    data,
    offsets: new Float64Array([offset]),
    lengths: new Uint32Array([length]),
  });
  // 2^64 - 2048 is a whole number that fits a size_t: offset + length wrapped past 2^64 to a
  // pointer 2 KiB before the buffer, and the checksum read (or the decoder wrote) there.
  const hostile: Array<[number, number]> = [
    [2 ** 64 - 2048, 4096],
    [2 ** 64 - 4096, 4096],
    [2 ** 63, 1],
    [Infinity, 0],
    [-Infinity, 0],
    [NaN, 0],
    [-1, 0],
    [1e300, 0],
    [0.5, 1],
    [4097, 0],
    [4096, 1],
    [1, 4096],
    [0, 0xffffffff],
  ];
  for (const [offset, length] of hostile) {
    const what = `offset ${offset}, length ${length}`;
    t.throws(
      () => native().checksumBatch('crc32', spans(offset, length), 0),
      { code: 'ERR_TDE_INVALID_ARGUMENT', message: /a chunk lies outside its buffer/ },
      what,
    );
    t.throws(
      () => native().codecDecodeInto('None', [Buffer.alloc(8)], [8], spans(offset, length), false),
      { code: 'ERR_TDE_INVALID_ARGUMENT', message: /a chunk lies outside its buffer/ },
      what,
    );
  }
  // The edges that are inside still work: an empty chunk at the very end, the whole buffer.
  const edge = await native().checksumBatch(
    'crc32',
    { data, offsets: new Float64Array([4096, 0, -0]), lengths: new Uint32Array([0, 4096, 1]) },
    0,
  );
  t.deepEqual([...edge.subarray(0, 3)], [0, zlib.crc32(data), zlib.crc32(data.subarray(0, 1))]);
});

test(
  'a spans getter that detaches what an earlier ' + 'getter returned cannot make the addon read it',
  (t) => {
    const data = Buffer.alloc(1 << 16, 2);
    const offsets = new Float64Array(1024);
    const spans = {
      data,
      offsets,
      get lengths() {
        // Moves the offsets' memory away, as postMessage with a transfer list would.
        structuredClone(offsets.buffer, { transfer: [offsets.buffer] });
        return new Uint32Array(1024).fill(16);
      },
    };
    t.throws(() => native().checksumBatch('crc32', spans, 0), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /offsets and lengths differ in length/,
    });
    t.is(offsets.length, 0, 'the offsets were detached before they were read');
  },
);

test(
  'buffers in a resizable ArrayBuffer are refused by batches (a shrink would take their ' +
    'pages)',
  async (t) => {
    const key = crypto.randomBytes(16);
    const c = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      key,
    });
    const resizable = () => new ArrayBuffer(1 << 16, { maxByteLength: 1 << 20 } as never);
    const input = new Uint8Array(resizable(), 0, 1000);
    await t.throwsAsync(() => c.encryptBatch([input, new Uint8Array(input.buffer, 1000, 1000)]), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /resizable ArrayBuffer.*copy it into a Buffer/,
    });
    await t.throwsAsync(() => c.encryptBatch([input]), { code: 'ERR_TDE_INVALID_ARGUMENT' });
    // Outputs, which the pool threads write: shrinking one mid-batch crashed the process.
    const out = new Uint8Array(resizable());
    t.throws(() => native().codecEncodeInto('LZ4', [Buffer.alloc(100)], [out], null), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /each output lies in a resizable ArrayBuffer/,
    });
    t.throws(
      () =>
        native().checksumBatch(
          'crc32',
          { data: out, offsets: new Float64Array([0]), lengths: new Uint32Array([1]) },
          0,
        ),
      { code: 'ERR_TDE_INVALID_ARGUMENT' },
    );
    // A copy works, and so do the one-off calls that finish before JavaScript runs again.
    t.is((await c.encryptBatch([Buffer.from(input)]))[0].length, 16 + 1008);
    t.is(c.decryptSync(c.encryptSync(input)).length, 1000);
    c.destroy();
  },
);

test('empty chunks in buffers with no memory behind them encode and decode', async (t) => {
  // Buffer.alloc(0) has no memory at all: zlib refused such an output ("invalid stream", read as
  // a corrupt chunk), and the copies of zero bytes from it were undefined behaviour.
  const none = () => Buffer.alloc(0);
  for (const codec of ['None', 'LZ4', 'Deflate', 'Snappy'] as const) {
    if (!native().codecAvailable(codec)) continue;
    const out = Buffer.alloc(native().codecBound(codec, 0));
    const [n] = await native().codecEncodeInto(codec, [none()], [out], null);
    const decoded = await native().codecDecodeInto(
      codec,
      [out.subarray(0, n)],
      [0],
      [none()],
      true,
    );
    t.deepEqual([...decoded], [0, 0], codec);
  }
  for (const cipher_algorithm of [
    'AES/CBC/PKCS5Padding',
    'AES/ECB/PKCS5Padding',
    'AES/CTR/NoPadding',
  ]) {
    const key = crypto.randomBytes(16);
    const c = createChunkCipher({ cipher_algorithm, secret_key_strength: 128, key });
    for (const codec of ['None', 'Deflate'] as const) {
      const [chunk] = await c.encodeBatch(codec, [none()]);
      t.deepEqual((await c.decodeBatch(codec, [chunk], [0]))[0], Buffer.alloc(0), cipher_algorithm);
    }
    t.is((await c.decrypt(await c.encrypt(none()))).length, 0);
    c.destroy();
  }
});

test('the addon refuses a cipher that would use one all-zero IV for every chunk', (t) => {
  // TypeScript never asks for this (only ECB has no IV), but the addon's own check is what keeps
  // a caller's slip from silently reusing a CTR or GCM keystream.
  const spec = { padding: false, rc2KeyBits: 0, tagLength: 0, ivLength: 0 };
  const make = (more: object, keyBytes = 16) =>
    new (native().ChunkCipher)({ ...spec, evpName: '', ...more }, crypto.randomBytes(keyBytes));
  for (const [evpName, tagLength, iv] of [
    ['AES-128-CBC', 0, 16],
    ['AES-128-CTR', 0, 16],
    ['AES-128-GCM', 16, 12],
    ['DES-EDE3-CBC', 0, 8],
  ] as const) {
    t.throws(() => make({ evpName, tagLength }, evpName.startsWith('DES') ? 24 : 16), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: new RegExp(`${evpName} needs an IV: a fresh ${iv}-byte one`),
    });
  }
  // ECB takes none, and a fixed IV (commit log, hints) is one.
  t.notThrows(() => make({ evpName: 'AES-128-ECB' }).destroy());
  t.notThrows(() => make({ evpName: 'AES-128-CBC', fixedIv: Buffer.alloc(16, 1) }).destroy());
});

test('the addon refuses GCM tags shorter than 12 bytes, which trial forgery could beat', (t) => {
  const make = (tagLength: number) =>
    new (native().ChunkCipher)(
      { evpName: 'AES-128-GCM', ivLength: 12, padding: false, rc2KeyBits: 0, tagLength },
      crypto.randomBytes(16),
    );
  for (const tagLength of [1, 4, 8, 11, 17]) {
    t.throws(() => make(tagLength), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /AES-128-GCM needs a tag length of 12 to 16 bytes/,
    });
  }
  for (const tagLength of [12, 16]) t.notThrows(() => make(tagLength).destroy());
});

test(
  'of several bad chunks in a batch, the lowest-numbered is reported, however threads split ' +
    'it',
  async (t) => {
    const c = createChunkCipher({
      cipher_algorithm: 'AES/ECB/PKCS5Padding',
      secret_key_strength: 128,
      key: Buffer.alloc(16, 3),
    });
    // Small chunks in one allocation: threads take them in runs of many, out of order.
    const plain = Array.from({ length: 3000 }, (_, i) => Buffer.alloc(500, i));
    const stored = await c.encryptBatch(plain);
    const whole = Buffer.concat(stored);
    let at = 0;
    const chunks = stored.map((s) => whole.subarray(at, (at += s.length)));
    for (const bad of [2990, 1801, 1800, 977]) chunks[bad] = chunks[bad].subarray(0, 15);
    const before = native().parallelism();
    for (const threads of [1, 2, 4]) {
      native().setParallelism(threads);
      const err = await t.throwsAsync(() => c.decryptBatch(chunks), {
        code: 'ERR_TDE_CHUNK_LENGTH',
      });
      t.regex(err?.message ?? '', /chunk 977 of the batch/, `${threads} threads`);
    }
    native().setParallelism(before);
    // The good chunks still decrypt to what was written.
    t.deepEqual(await c.decryptBatch(chunks.slice(0, 977)), plain.slice(0, 977));
    c.destroy();
  },
);

test('workers that load the addon alone and end mid-batch leave the process running', async (t) => {
  // A process whose main thread never loads the addon: each worker brings its own copy, and it
  // ends (terminated or by process.exit) while its batch is still on the pool's threads.
  const worker =
    `
    const { parentPort, workerData } = require('node:worker_threads');
    const { createChunkCipher } = require(workerData.dist);
    const c = createChunkCipher({ cipher_algorithm: 'AES/ECB/PKCS5Padding', ` +
    `secret_key_strength: 128,
      key: Buffer.alloc(16, 1) });
    const chunks = Array.from({ length: 512 }, () => Buffer.alloc(1 << 17, 7));
    c.encryptBatch(chunks).then((out) => parentPort.postMessage(out.length));
    if (workerData.exit) process.exit(0);
    parentPort.postMessage('queued');
  `;
  const main =
    `
    const { Worker } = require('node:worker_threads');
    (async () => {
      for (let round = 0; round < 6; round++) {
        const w = new Worker(${JSON.stringify(worker)}, { eval: true,
          workerData: { ` +
    `dist: ${JSON.stringify(path.join(ROOT, 'dist'))}, exit: round % 2 === 1 } });
        const first = new Promise((resolve) => w.once('message', resolve));
        if (round % 2 === 0) {
          await first;
          await w.terminate();
        } else {
          await new Promise((resolve) => w.once('exit', resolve));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const last = new Worker(${JSON.stringify(worker)}, { eval: true,
        workerData: { dist: ${JSON.stringify(path.join(ROOT, 'dist'))}, exit: false } });
      const seen = [];
      last.on('message', (m) => { seen.push(m); if (seen.length === 2) last.terminate(); });
      await new Promise((resolve) => last.once('exit', resolve));
      console.log(JSON.stringify(seen));
    })();
  `;
  const r = await nodeChild(['-e', main]);
  t.is(r.signal, null, r.stderr);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout.trim()), ['queued', 512]);
});

test('startWriteback starts writing a range of a file, says false where it cannot', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-writeback-'));
  const file = path.join(dir, 'data');
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, crypto.randomBytes(1 << 20));
    t.is(await native().startWriteback(fd, 0, 1 << 20), process.platform === 'linux');
    // Advisory: the data is unchanged, and fsync still has the last word.
    fs.fsyncSync(fd);
    t.is(fs.statSync(file).size, 1 << 20);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // A descriptor that no process can have open (beyond any limit): false, not an exception.
  t.false(await native().startWriteback(1 << 30, 0, 4096));
  // Anything but whole numbers in range is refused, never rounded to some other descriptor.
  for (const [fd, offset, length] of [
    [-1, 0, 4096],
    [0, -1, 4096],
    [1.5, 0, 4096],
    [Number.NaN, 0, 4096],
    [0, 0, Number.POSITIVE_INFINITY],
    [2 ** 31, 0, 4096],
    [0, 2 ** 53 + 2, 4096],
  ]) {
    t.throws(() => native().startWriteback(fd, offset, length), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /whole numbers/,
    });
  }
  t.throws(() => native().startWriteback('3' as unknown as number, 0, 4096), {
    code: 'ERR_TDE_INVALID_ARGUMENT',
    message: /three numbers/,
  });
});

test('with SSTABLE_TDE_VAES=0 the 128-bit AES and CRC32 code agree with Node and zlib', async (t) => {
  // On a machine with VAES the 256-bit code takes every full 128 bytes, so the 128-bit loops
  // only see tails; a process with the wide code switched off runs them on whole chunks.
  const main = `
    const crypto = require('node:crypto');
    const zlib = require('node:zlib');
    const { createChunkCipher } = require(${JSON.stringify(`${ROOT}/src/cipher/chunk-cipher`)});
    const { native } = require(${JSON.stringify(`${ROOT}/src/native`)});
    const bad = [];
    let checked = 0;
    for (const bits of [128, 256]) {
      const key = crypto.randomBytes(bits / 8);
      const modes = ['CTR/NoPadding', 'CBC/PKCS5Padding', 'ECB/PKCS5Padding', 'GCM/NoPadding'];
      for (const mode of modes) {
        const algorithm = 'AES/' + mode;
        const options = { cipher_algorithm: algorithm, secret_key_strength: bits, key };
        const c = createChunkCipher(options);
        for (const n of [1, 15, 16, 127, 128, 129, 1000, 4096, 65543]) {
          const plain = crypto.randomBytes(n);
          const aad = mode.startsWith('GCM') ? crypto.randomBytes(24) : undefined;
          const out = c.encryptSync(plain, aad);
          const evp = 'aes-' + bits + '-' + mode.slice(0, 3).toLowerCase();
          let back;
          if (mode.startsWith('GCM')) {
            const d = crypto.createDecipheriv(evp, key, out.subarray(0, 12));
            d.setAAD(aad);
            d.setAuthTag(out.subarray(out.length - 16));
            back = Buffer.concat([d.update(out.subarray(12, out.length - 16)), d.final()]);
          } else {
            const ivLength = mode.startsWith('ECB') ? 0 : 16;
            const d = crypto.createDecipheriv(evp, key, ivLength ? out.subarray(0, 16) : null);
            back = Buffer.concat([d.update(out.subarray(ivLength)), d.final()]);
          }
          const own = c.decryptSync(out, aad);
          if (!back.equals(plain) || !own.equals(plain)) bad.push(evp + ' ' + n);
          checked++;
        }
        c.destroy();
      }
    }
    (async () => {
      for (const n of [255, 256, 257, 4096, 65543]) {
        const data = crypto.randomBytes(n);
        const sums = await native().checksumBatch('crc32', [data], 0);
        if (sums[0] !== zlib.crc32(data) >>> 0) bad.push('crc32 ' + n);
        checked++;
      }
      console.log(JSON.stringify({ checked, bad }));
    })();
  `;
  const r = await nodeChild(['--import=tsx', '-e', main], {
    ...process.env,
    SSTABLE_TDE_VAES: '0',
  });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout.trim()), { checked: 2 * 4 * 9 + 5, bad: [] });
});

test(
  'readChecked reads a region and checksums its spans as zlib does, however the spans lie ' +
    'across the pieces its threads take',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tde-read-checked-'));
    const file = path.join(dir, 'data');
    const bytes = crypto.randomBytes(1300 * 1024);
    fs.writeFileSync(file, bytes);
    const fd = await fs.promises.open(file, 'r');
    const sumOf = (kind: 'crc32' | 'adler32', b: Buffer) =>
      kind === 'crc32' ? zlib.crc32(b) >>> 0 : native().adler32(b);
    try {
      // Spans from 0 bytes to past a piece (256 KiB), with and without gaps between them.
      const span = fc.record({
        gap: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 })),
        length: fc.oneof(fc.constant(0), fc.constant(4), fc.integer({ min: 1, max: 300 * 1024 })),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 4096 }),
          fc.array(span, { maxLength: 12 }),
          fc.constantFrom('crc32' as const, 'adler32' as const),
          fc.integer({ min: 0, max: 2000 }),
          async (position, layout, kind, tail) => {
            const offsets: number[] = [];
            const lengths: number[] = [];
            let at = 0;
            for (const s of layout) {
              if (position + at + s.gap + s.length > bytes.length) break;
              offsets.push(at + s.gap);
              lengths.push(s.length);
              at += s.gap + s.length;
            }
            const length = Math.min(bytes.length - position, at + tail);
            const into = Buffer.alloc(length + 8, 0xee);
            const out = await native().readChecked(
              fd.fd,
              position,
              length,
              into,
              Float64Array.from(offsets),
              Uint32Array.from(lengths),
              kind,
            );
            const region = bytes.subarray(position, position + length);
            t.true(into.subarray(0, length).equals(region));
            t.is(into[length], 0xee, 'nothing is written past the region');
            t.is(out.length, offsets.length + 1);
            offsets.forEach((o, i) =>
              t.is(out[i], sumOf(kind, region.subarray(o, o + lengths[i])), `span ${i}`),
            );
            t.is(out[offsets.length], sumOf(kind, region), 'the whole region');
          },
        ),
        {
          numRuns: 60,
          // Span edges on either side of a piece's edge (256 KiB), and exactly on it.
          examples: (['crc32', 'adler32'] as const).map((kind) => [
            0,
            [
              { gap: 0, length: 262143 },
              { gap: 0, length: 2 },
              { gap: 0, length: 0 },
              { gap: 0, length: 262143 },
              { gap: 0, length: 4 },
              { gap: 0, length: 0 },
            ],
            kind,
            0,
          ]),
        },
      );
    } finally {
      await fd.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  'readChecked names the file and the byte where it ended or could not be read, and refuses ' +
    'spans out of order or outside the region',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tde-read-checked-'));
    const file = path.join(dir, 'short');
    fs.writeFileSync(file, crypto.randomBytes(100 * 1024));
    const fd = await fs.promises.open(file, 'r');
    const none = { offsets: new Float64Array(0), lengths: new Uint32Array(0) };
    try {
      // Pieces after the end fail too; the first failure in file order is the one reported.
      await t.throwsAsync(
        readChecked(fd, file, 1000, 700 * 1024, Buffer.alloc(700 * 1024), none, 'crc32'),
        {
          code: 'ERR_TDE_IO',
          message:
            `${file} ended at byte 102400 while 716800 bytes from 1000 were being read: ` +
            'was it truncated while in use?',
        },
      );
      const dirFd = await fs.promises.open(dir, 'r');
      try {
        await t.throwsAsync(readChecked(dirFd, dir, 0, 10, Buffer.alloc(10), none, 'crc32'), {
          code: 'ERR_TDE_IO',
          message: `cannot read ${dir}: a directory was found where a file was expected`,
        });
      } finally {
        await dirFd.close();
      }

      const call = (length: number, into: number, offsets: number[], lengths: number[]) => () =>
        native().readChecked(
          fd.fd,
          0,
          length,
          Buffer.alloc(into),
          Float64Array.from(offsets),
          Uint32Array.from(lengths),
          'crc32',
        );
      const refused = { code: 'ERR_TDE_INVALID_ARGUMENT' };
      t.throws(call(10, 10, [5, 0], [1, 1]), refused);
      t.throws(call(10, 10, [0, 3], [4, 1]), refused);
      t.throws(call(10, 10, [8], [4]), refused);
      t.throws(call(10, 5, [], []), refused);
      t.throws(call(10, 10, [0.5], [1]), refused);
    } finally {
      await fd.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

// Serial, so that no other test opens a file between the close and the opens that take its number.
test.serial(
  'readChecked reads through its own descriptor: closing the caller’s and reusing the number ' +
    'before the read runs changes nothing',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tde-read-checked-'));
    const mine = path.join(dir, 'mine');
    const other = path.join(dir, 'other');
    const bytes = crypto.randomBytes(1 << 20);
    fs.writeFileSync(mine, bytes);
    fs.writeFileSync(other, crypto.randomBytes(1 << 20));
    try {
      // Checksums of 512 MiB keep the pool busy, so the read below waits in its queue.
      const busy = Buffer.alloc(256 << 20, 1);
      const queued = [
        native().checksumBatch('adler32', [busy], 1),
        native().checksumBatch('adler32', [busy], 1),
      ];
      const fd = await fs.promises.open(mine, 'r');
      const number = fd.fd;
      const into = Buffer.alloc(bytes.length);
      const spans = { offsets: Float64Array.of(0), lengths: Uint32Array.of(bytes.length) };
      const read = native().readChecked(
        number,
        0,
        bytes.length,
        into,
        spans.offsets,
        spans.lengths,
        'crc32',
      );
      await fd.close();
      // The lowest free number goes to the next file opened: open until it is the closed one's.
      const opened: number[] = [];
      try {
        while (opened.length < 256 && opened[opened.length - 1] !== number)
          opened.push(fs.openSync(other, 'r'));
        t.is(opened[opened.length - 1], number, 'the number went to the other file');
        const out = await read;
        t.true(into.equals(bytes), 'the bytes are those of the file that was open');
        t.is(out[0], zlib.crc32(bytes) >>> 0);
      } finally {
        for (const n of opened) fs.closeSync(n);
        await Promise.all(queued);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('worker threads terminated during reads and checksum batches leave the process running', async (t) => {
  // node-addon-api, refused every call by an environment being torn down, would otherwise throw
  // a C++ exception that nothing catches (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tde-read-checked-'));
  const file = path.join(dir, 'data');
  await fs.promises.writeFile(file, Buffer.alloc(16 << 20, 7));
  const worker = `
    const fs = require('node:fs');
    const { parentPort, workerData } = require('node:worker_threads');
    const addon = require(workerData.addon);
    (async () => {
      const fh = await fs.promises.open(workerData.file, 'r');
      const into = Buffer.allocUnsafe(16 << 20);
      parentPort.postMessage('go');
      for (;;) {
        const spans = [new Float64Array([0]), new Uint32Array([1 << 20])];
        await Promise.all([
          addon.readChecked(fh.fd, 0, 16 << 20, into, ...spans, 'crc32'),
          addon.readChecked(fh.fd, 0, 16 << 20, into, ...spans, 'adler32'),
          addon.checksumBatch('crc32', [into], 0),
        ]);
      }
    })();
  `;
  const main = `
    const { Worker } = require('node:worker_threads');
    (async () => {
      for (let round = 0; round < 20; round++) {
        const w = new Worker(${JSON.stringify(worker)}, { eval: true, workerData: {
          addon: ${JSON.stringify(path.join(ROOT, 'build/Release/sstable_tde.node'))},
          file: ${JSON.stringify(file)} } });
        await new Promise((resolve) => w.once('message', resolve));
        await new Promise((resolve) => setTimeout(resolve, (round * 7) % 40));
        await w.terminate();
      }
      console.log('alive');
    })();
  `;
  try {
    const r = await nodeChild(['-e', main]);
    t.is(r.signal, null, r.stderr);
    t.is(r.status, 0, r.stderr);
    t.is(r.stdout.trim(), 'alive');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
