import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { TdeError } from '../src/errors';
import { native } from '../src/native';
import { parseTransformation, resolveCipher } from '../src/cipher/transformation';
import { joinedView, SlabPool, viewsOf } from '../src/util/slabs';
import { FIXTURES } from './helpers';

interface Vector {
  transformation: string;
  secret_key_strength: number;
  key: string;
  iv: string | null;
  plaintext: string;
  ciphertext: string;
}

const vectors: Vector[] = JSON.parse(
  fs.readFileSync(path.join(FIXTURES, 'jce-vectors.json'), 'utf8'),
);
const hex = (s: string) => Buffer.from(s, 'hex');

function cipherFor(v: Vector) {
  return createChunkCipher({
    cipher_algorithm: v.transformation,
    secret_key_strength: v.secret_key_strength,
    key: hex(v.key),
  });
}

test(
  'every JCE vector decrypts to its plaintext from the DSE layout ' + '[IV][ciphertext]',
  async (t) => {
    t.true(vectors.length > 250);
    for (const v of vectors) {
      const c = cipherFor(v);
      const stored = Buffer.concat([v.iv ? hex(v.iv) : Buffer.alloc(0), hex(v.ciphertext)]);
      const [plain] = await c.decryptBatch([stored]);
      t.is(
        plain.toString('hex'),
        v.plaintext,
        `${v.transformation} ${v.secret_key_strength} (${v.plaintext.length / 2} bytes)`,
      );
      c.destroy();
    }
  },
);

test('every ECB JCE vector encrypts to exactly its ciphertext', async (t) => {
  const ecb = vectors.filter((v) => v.iv === null);
  t.true(ecb.length > 100);
  for (const v of ecb) {
    const c = cipherFor(v);
    const [out] = await c.encryptBatch([hex(v.plaintext)]);
    t.is(out.toString('hex'), v.ciphertext, `${v.transformation} ${v.secret_key_strength}`);
    c.destroy();
  }
});

test(
  'CBC encryption chains as JCE does: the first block is E(key, P0 xor IV) under the same ' +
    'cipher in ECB',
  async (t) => {
    const cbc = vectors.filter(
      (v) => v.iv !== null && v.plaintext.length >= 32 && v.transformation.endsWith('PKCS5Padding'),
    );
    t.true(cbc.length > 20);
    for (const v of cbc) {
      const c = cipherFor(v);
      const [stored] = await c.encryptBatch([hex(v.plaintext)]);
      const block = c.choice.blockSize;
      const iv = stored.subarray(0, block);
      const p0 = hex(v.plaintext).subarray(0, block);
      const xored = Buffer.from(p0.map((b, i) => b ^ iv[i]));
      const ecb = createChunkCipher({
        cipher_algorithm: v.transformation.replace('/CBC/PKCS5Padding', '/ECB/NoPadding'),
        secret_key_strength: v.secret_key_strength,
        key: hex(v.key),
      });
      t.is(
        ecb.encryptSync(xored).toString('hex'),
        stored.subarray(block, 2 * block).toString('hex'),
        v.transformation,
      );
      t.is((await c.decrypt(stored)).toString('hex'), v.plaintext);
      c.destroy();
      ecb.destroy();
    }
  },
);

test(
  "AES/CBC/PKCS5Padding chunks are [16-byte random IV][ciphertext] that Node's crypto " +
    'decrypts',
  async (t) => {
    for (const bits of [128, 192, 256]) {
      const key = crypto.randomBytes(bits / 8);
      const c = createChunkCipher({
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: bits,
        key,
      });
      const chunks = [0, 1, 15, 16, 17, 4096, 65536].map((n) => crypto.randomBytes(n));
      const out = await c.encryptBatch(chunks);
      out.forEach((o, i) => {
        t.is(o.length, 16 + (Math.floor(chunks[i].length / 16) + 1) * 16);
        const d = crypto.createDecipheriv(`aes-${bits}-cbc`, key, o.subarray(0, 16));
        t.true(Buffer.concat([d.update(o.subarray(16)), d.final()]).equals(chunks[i]));
      });
      c.destroy();
    }
  },
);

test('each chunk gets a fresh IV: the same plaintext twice gives different chunks', async (t) => {
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    key: crypto.randomBytes(16),
  });
  const same = Buffer.alloc(1000, 1);
  const [a, b] = await c.encryptBatch([same, same]);
  t.false(a.subarray(0, 16).equals(b.subarray(0, 16)));
  t.false(a.equals(b));
  c.destroy();
});

test("AES/ECB/PKCS5Padding has no IV and matches Node's aes-ecb", async (t) => {
  const key = crypto.randomBytes(16);
  const c = createChunkCipher({
    cipher_algorithm: 'AES/ECB/PKCS5Padding',
    secret_key_strength: 128,
    key,
  });
  const data = crypto.randomBytes(1000);
  const e = crypto.createCipheriv('aes-128-ecb', key, null);
  t.true((await c.encrypt(data)).equals(Buffer.concat([e.update(data), e.final()])));
  t.is(c.ivLength, 0);
  c.destroy();
});

test(
  'decrypting with the wrong key fails with ' + 'ERR_TDE_DECRYPT_FAILED naming the chunk',
  async (t) => {
    const a = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      key: Buffer.alloc(16, 1),
    });
    const b = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      key: Buffer.alloc(16, 2),
    });
    // Find a ciphertext whose wrong-key decryption has invalid padding (255 in 256 do).
    const chunks = await a.encryptBatch(Array.from({ length: 8 }, (_, i) => Buffer.alloc(100, i)));
    const err = await t.throwsAsync(() => b.decryptBatch(chunks), {
      code: 'ERR_TDE_DECRYPT_FAILED',
    });
    t.regex(err?.message ?? '', /chunk \d of the batch/);
    t.regex(err?.message ?? '', /different key|altered/);
  },
);

test('ciphertext that is not whole blocks fails with ERR_TDE_CHUNK_LENGTH', async (t) => {
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    key: Buffer.alloc(16),
  });
  await t.throwsAsync(() => c.decrypt(Buffer.alloc(16 + 15)), { code: 'ERR_TDE_CHUNK_LENGTH' });
  await t.throwsAsync(() => c.decrypt(Buffer.alloc(10)), { code: 'ERR_TDE_CHUNK_LENGTH' });
  await t.throwsAsync(() => c.decrypt(Buffer.alloc(16)), { code: 'ERR_TDE_CHUNK_LENGTH' });
  const np = createChunkCipher({
    cipher_algorithm: 'AES/ECB/NoPadding',
    secret_key_strength: 128,
    key: Buffer.alloc(16),
  });
  await t.throwsAsync(() => np.encrypt(Buffer.alloc(17)), {
    code: 'ERR_TDE_CHUNK_LENGTH',
    message: /whole 16-byte blocks/,
  });
});

test(
  'transformation names are case-insensitive and a bare name means ECB with PKCS5 padding, as ' +
    'in JCE',
  (t) => {
    t.is(parseTransformation('aes/cbc/pkcs5padding').name, 'AES/CBC/PKCS5Padding');
    t.is(parseTransformation('AES').name, 'AES/ECB/PKCS5Padding');
    t.is(parseTransformation('desede/CBC/NoPadding').name, 'DESede/CBC/NoPadding');
    t.is(parseTransformation('TripleDES').name, 'DESede/ECB/PKCS5Padding');
  },
);

test('unknown transformations and strengths give errors that list what is accepted', (t) => {
  t.throws(() => parseTransformation('AESX/CBC/PKCS5Padding'), {
    code: 'ERR_TDE_UNKNOWN_CIPHER',
    message: /AES, DES, DESede, Blowfish, RC2/,
  });
  t.throws(() => parseTransformation('AES/GCMX/NoPadding'), {
    code: 'ERR_TDE_UNKNOWN_CIPHER',
    message: /ECB or CBC/,
  });
  t.throws(() => parseTransformation('AES/CBC/PKCS7'), {
    code: 'ERR_TDE_UNKNOWN_CIPHER',
    message: /PKCS5Padding or NoPadding/,
  });
  t.throws(() => resolveCipher('AES/CBC/PKCS5Padding', 100), {
    code: 'ERR_TDE_KEY_STRENGTH',
    message: /128, 192 or 256/,
  });
  t.throws(() => resolveCipher('Blowfish', 30), {
    code: 'ERR_TDE_KEY_STRENGTH',
    message: /32 to 448/,
  });
  t.throws(() => resolveCipher('AES/CBC/PKCS5Padding', 128, 8), {
    code: 'ERR_TDE_BAD_OPTION',
    message: /exactly 16 bytes/,
  });
});

test('a key of the wrong length is refused without echoing key bytes', (t) => {
  const key = Buffer.from('00112233445566778899aabbccddeeff00', 'hex');
  const err = t.throws(
    () =>
      createChunkCipher({
        cipher_algorithm: 'AES/CBC/PKCS5Padding',
        secret_key_strength: 128,
        key,
      }),
    { code: 'ERR_TDE_KEY_LENGTH' },
  );
  t.false(err?.message.includes(key.toString('hex')) ?? true);
  t.false(err?.message.includes(key.toString('base64')) ?? true);
});

test('IV length follows DSE: 16 for AES, 8 for the 64-bit-block ciphers, none for ECB', (t) => {
  t.is(resolveCipher('AES/CBC/PKCS5Padding', 128).ivLength, 16);
  t.is(resolveCipher('DESede/CBC/PKCS5Padding', 168).ivLength, 8);
  t.is(resolveCipher('Blowfish/CBC/PKCS5Padding', 128).ivLength, 8);
  t.is(resolveCipher('AES/ECB/PKCS5Padding', 256).ivLength, 0);
});

/** Random chunks of these lengths laid end to end in one buffer, described as spans. */
function spansOf(lengths: number[]) {
  const spans = new SlabPool().carveSpans(lengths);
  crypto.randomFillSync(spans.data);
  return spans;
}

test(
  'encryptSpans and decryptSpans: the same chunks as the Buffer[] methods, ' +
    'with no object per chunk',
  async (t) => {
    const key = crypto.randomBytes(16);
    const c = createChunkCipher({
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      key,
    });
    const plain = spansOf([4096, 0, 15, 16, 17, 4096, 65536, 3]);
    const enc = await c.encryptSpans(plain);

    t.deepEqual(
      Array.from(enc.lengths),
      Array.from(plain.lengths, (n) => c.encryptedLength(n)),
    );
    const plainChunks = viewsOf(plain);
    const encChunks = viewsOf(enc);
    encChunks.forEach((e, i) => {
      const node = crypto.createDecipheriv('aes-128-cbc', key, e.subarray(0, 16));
      const back = Buffer.concat([node.update(e.subarray(16)), node.final()]);
      t.true(back.equals(plainChunks[i]), `chunk ${i} decrypts with Node's crypto`);
    });

    // What one form encrypts the other decrypts.
    const viaBatch = await c.decryptBatch(encChunks);
    t.true(viaBatch.every((b, i) => b.equals(plainChunks[i])));
    const dec = await c.decryptSpans(enc);
    t.deepEqual(Array.from(dec.lengths), Array.from(plain.lengths));
    viewsOf(dec).forEach((d, i) => t.true(d.equals(plainChunks[i]), `chunk ${i}`));

    // Given back, the memory serves the next batch.
    const slab = enc.data.buffer;
    c.recycleSpans(enc);
    t.is((await c.encryptSpans(plain)).data.buffer, slab);
    c.destroy();
  },
);

test(
  'encryptSpans: malformed spans, a span outside its buffer and a missing aad ' +
    'are refused before any work',
  async (t) => {
    const c = createChunkCipher({
      cipher_algorithm: 'AES/GCM/NoPadding',
      secret_key_strength: 128,
      key: crypto.randomBytes(16),
    });
    const good = spansOf([100, 200]);
    const aad = spansOf([46, 46]);
    const bad = [
      { ...good, offsets: [0, 100] },
      { ...good, lengths: new Uint32Array(1) },
      { ...good, offsets: Float64Array.of(0, 250) },
      { ...good, offsets: Float64Array.of(0, 0.5) },
    ];
    for (const spans of bad) {
      await t.throwsAsync(c.encryptSpans(spans as never, aad), {
        code: 'ERR_TDE_INVALID_ARGUMENT',
      });
    }
    await t.throwsAsync(c.encryptSpans(bad[2], aad), {
      message: /chunk 1 \(offset 250, 200 bytes\) lies outside its 300-byte buffer/,
    });
    await t.throwsAsync(c.encryptSpans(good), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /one aad buffer per chunk \(none for 2 chunks\)/,
    });
    await t.throwsAsync(c.encryptSpans(good, spansOf([46])), {
      message: /one aad buffer per chunk \(1 for 2 chunks\)/,
    });
    await t.throwsAsync(c.encryptSpans(bad[1], aad), {
      message: /chunks has 2 offsets but 1 lengths/,
    });
    // Memory that could shrink under the addon's threads is refused up front.
    const resizable = new Uint8Array(new ArrayBuffer(300, { maxByteLength: 600 } as never));
    await t.throwsAsync(c.encryptSpans({ ...good, data: resizable }, aad), {
      code: 'ERR_TDE_INVALID_ARGUMENT',
      message: /chunks: data lies in a resizable ArrayBuffer/,
    });

    // A chunk altered after encryption is named by its index.
    const enc = await c.encryptSpans(good, aad);
    enc.data[enc.offsets[1] + 20] ^= 1;
    const err = await t.throwsAsync(c.decryptSpans(enc, aad), { code: 'ERR_TDE_INTEGRITY' });
    t.regex(err?.message ?? '', /chunk 1 of the batch/);
    c.destroy();
    await t.throwsAsync(c.encryptSpans(good, aad), { code: 'ERR_TDE_CIPHER_DESTROYED' });
  },
);

test('SlabPool: batches a little larger than the last reuse its slab; larger slabs are kept', (t) => {
  const pool = new SlabPool();
  // Stored regions of successive batches differ by a few KiB: they share one slab.
  const first = pool.carve([1_650_000]);
  const slab = first[0].buffer;
  pool.recycle(first);
  const second = pool.carve([1_700_000]);
  t.true(second[0].buffer === slab);
  t.is(second[0].length, 1_700_000);

  // Past what rounding covers, fresh memory; once the free list is full, a larger slab given
  // back replaces the smallest, so the next large batch needs no new memory either.
  const held = [second, ...[1, 2, 3, 4].map(() => pool.carve([1_000_000]))];
  for (const batch of held) pool.recycle(batch);
  const big = pool.carve([3_000_000]);
  t.false(big[0].buffer === slab);
  const bigSlab = big[0].buffer;
  pool.recycle(big);
  t.true(pool.carve([2_900_000])[0].buffer === bigSlab);
});

test('joinedView: one view of buffers that lie end to end in one slab, none otherwise', (t) => {
  const batch = new SlabPool().carve([5, 0, 7, 3]);
  batch.forEach((b, i) => b.fill(i + 1));
  const whole = joinedView(batch) as Buffer;
  t.deepEqual([...whole], [1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4]);
  t.true(whole.buffer === batch[0].buffer);
  // A gap, another slab, or nothing at all: no joined view.
  t.is(joinedView([batch[0], batch[3]]), undefined);
  t.is(joinedView([batch[2], batch[0]]), undefined);
  t.is(joinedView([batch[0], Buffer.alloc(7)]), undefined);
  t.is(joinedView([]), undefined);
});

test('SlabPool: a slab larger than any batch is not kept once given back', (t) => {
  const pool = new SlabPool();
  const huge = pool.carve([80 << 20]);
  const slab = huge[0].buffer;
  pool.recycle(huge);
  t.false(pool.carve([80 << 20])[0].buffer === slab);
  // A batch-sized one is.
  const batch = pool.carve([4 << 20]);
  const kept = batch[0].buffer;
  pool.recycle(batch);
  t.true(pool.carve([4 << 20])[0].buffer === kept);
});

test('misuse of the cipher API is a coded TdeError, never a TypeError or an abort', async (t) => {
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    key: Buffer.alloc(16, 1),
  });
  const loose = c as unknown as Record<string, (...a: unknown[]) => unknown>;
  const cases: [string, () => unknown, RegExp][] = [
    ['encrypt()', () => loose.encrypt.call(c), /chunks\[0\] must be a Buffer/],
    ['a null chunk', () => loose.encryptBatch.call(c, [null]), /chunks\[0\] .* not null/],
    ['a hole', () => loose.encryptBatch.call(c, new Array(3)), /not undefined/],
    ['recycle(null)', () => loose.recycle.call(c, null), /must be an array of Buffers/],
    [
      'a plain length past 2^31',
      () => c.decodeBatch('LZ4', [Buffer.alloc(40)], [2 ** 32 + 10]),
      /lengths\[0\] must be a whole number from 0 to 2147483647/,
    ],
    ['an unknown codec', () => loose.encodedLength.call(c, 'Zstd', 10), /codec must be/],
    ['a negative length', () => c.encryptedLength(-1), /whole number/],
    ['NaN', () => c.encryptedLength(NaN), /not NaN/],
  ];
  for (const [name, call, message] of cases) {
    const err = await t.throwsAsync(async () => call(), { code: 'ERR_TDE_INVALID_ARGUMENT' }, name);
    t.true(err instanceof TdeError, `${name}: ${err?.constructor.name}`);
    t.regex(err!.message, message, name);
  }
  c.destroy();
  // The addon's own entry points (which the library wraps) refuse with a coded error too, where
  // a negative size once aborted the process (std::length_error) or wrapped to 2^32 - 1.
  const stream = { evpName: 'aes-128-cbc', ivLength: 16, rc2KeyBits: 0, tagLength: 0 };
  const raw: [() => unknown, RegExp][] = [
    [() => native().setParallelism(-1), /parallelism must be/],
    [() => native().codecBound('LZ4', -5), /length must be/],
    [() => native().evpStreamSeconds(stream, Buffer.alloc(16), -1, -1), /size must be/],
  ];
  for (const [call, message] of raw) {
    t.throws(call, { code: 'ERR_TDE_INVALID_ARGUMENT', message });
  }
});
