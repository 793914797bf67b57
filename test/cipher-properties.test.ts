/**
 * Property-based checks of the chunk cipher over every transformation, with fast-check. Tests that
 * turn the addon's AES-NI code on and off (a process-wide switch, shared with test files running
 * in other worker threads: both settings give the same bytes) run serially and put it back as
 * they found it.
 */
import * as crypto from 'node:crypto';

import test from 'ava';
import fc from 'fast-check';

import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { resolveCipher, supportedTransformations } from '../src/cipher/transformation';
import { isTdeError } from '../src/errors';
import { native } from '../src/native';

/** A valid strength for each algorithm, spread over its range. */
const STRENGTHS: Record<string, number[]> = {
  AES: [128, 192, 256],
  DES: [56],
  DESede: [112, 168],
  Blowfish: [32, 40, 128, 200, 448],
  RC2: [40, 64, 128],
};

const cipherArb = fc.constantFrom(...supportedTransformations()).chain((name) => {
  const alg = name.split('/')[0];
  return fc.record({
    name: fc.constant(name),
    strength: fc.constantFrom(...STRENGTHS[alg]),
  });
});

function keyArb(name: string, strength: number) {
  const len = resolveCipher(name, strength).keyLength;
  return fc.uint8Array({ minLength: len, maxLength: len });
}

const setup = cipherArb.chain(({ name, strength }) =>
  fc.record({
    name: fc.constant(name),
    strength: fc.constant(strength),
    key: keyArb(name, strength),
    otherKey: keyArb(name, strength),
    blocks: fc.integer({ min: 0, max: 300 }),
    extra: fc.integer({ min: 0, max: 15 }),
    aad: fc.uint8Array({ maxLength: 64 }),
    seed: fc.integer(),
  }),
);

function plaintextFor(name: string, blocks: number, extra: number, seed: number): Buffer {
  const c = resolveCipher(name, name.startsWith('AES') ? 128 : STRENGTHS[name.split('/')[0]][0]);
  // NoPadding with a block cipher mode needs whole blocks; CTR and GCM take any length.
  const whole = c.padding === 'NoPadding' && (c.mode === 'ECB' || c.mode === 'CBC');
  const len = blocks * c.blockSize + (whole ? 0 : extra);
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i++) out[i] = (seed * 31 + i * 7) & 0xff;
  return out;
}

test('encrypt then decrypt is the identity for every transformation, key and length', async (t) => {
  await fc.assert(
    fc.asyncProperty(setup, async ({ name, strength, key, blocks, extra, aad, seed }) => {
      const c = createChunkCipher({ cipher_algorithm: name, secret_key_strength: strength, key });
      try {
        const plain = plaintextFor(name, blocks, extra, seed);
        const ad = c.aead ? [Buffer.from(aad)] : undefined;
        const [enc] = await c.encryptBatch([plain], undefined, ad);
        if (enc.length > c.encryptedLength(plain.length)) return false;
        const [dec] = await c.decryptBatch([enc], undefined, ad);
        return dec.equals(plain);
      } finally {
        c.destroy();
      }
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test(
  'GCM never returns data for a wrong key, a ' + 'flipped byte or different additional data',
  async (t) => {
    const gcm = setup.filter(
      (s) =>
        s.name.includes('GCM') && Buffer.compare(Buffer.from(s.key), Buffer.from(s.otherKey)) !== 0,
    );
    await fc.assert(
      fc.asyncProperty(gcm, fc.nat(), fc.integer({ min: 1, max: 255 }), async (s, where, flip) => {
        const plain = plaintextFor(s.name, s.blocks, s.extra, s.seed);
        const a = createChunkCipher({
          cipher_algorithm: s.name,
          secret_key_strength: s.strength,
          key: s.key,
        });
        const b = createChunkCipher({
          cipher_algorithm: s.name,
          secret_key_strength: s.strength,
          key: s.otherKey,
        });
        try {
          const aad = Buffer.from(s.aad);
          const enc = await a.encrypt(plain, aad);
          const altered = Buffer.from(enc);
          altered[where % altered.length] ^= flip;
          const otherAad = Buffer.concat([aad, Buffer.from([1])]);
          for (const attempt of [
            () => b.decrypt(enc, aad),
            () => a.decrypt(altered, aad),
            () => a.decrypt(enc, otherAad),
          ]) {
            try {
              await attempt();
              return false;
            } catch (err) {
              if (!isTdeError(err, 'ERR_TDE_INTEGRITY')) return false;
            }
          }
          return true;
        } finally {
          a.destroy();
          b.destroy();
        }
      }),
      { numRuns: 200 },
    );
    t.pass();
  },
);

test(
  'CBC and ECB with padding: a wrong key fails the padding check or yields different bytes, ' +
    'never a crash',
  async (t) => {
    // Without authentication, a wrong key passes the padding check about 1 time in 256 and yields
    // garbage; that is why SSTables carry a key check value and chunk checksums.
    const padded = setup.filter(
      (s) =>
        s.name.endsWith('PKCS5Padding') &&
        Buffer.compare(Buffer.from(s.key), Buffer.from(s.otherKey)) !== 0,
    );
    await fc.assert(
      fc.asyncProperty(padded, async (s) => {
        const plain = plaintextFor(s.name, s.blocks, s.extra, s.seed);
        const a = createChunkCipher({
          cipher_algorithm: s.name,
          secret_key_strength: s.strength,
          key: s.key,
        });
        const b = createChunkCipher({
          cipher_algorithm: s.name,
          secret_key_strength: s.strength,
          key: s.otherKey,
        });
        try {
          const enc = await a.encrypt(plain);
          try {
            return !(await b.decrypt(enc)).equals(plain);
          } catch (err) {
            return isTdeError(err, 'ERR_TDE_DECRYPT_FAILED');
          }
        } finally {
          a.destroy();
          b.destroy();
        }
      }),
      { numRuns: 200 },
    );
    t.pass();
  },
);

test(
  'arbitrary bytes given to decrypt give a ' + 'typed error or bytes, never a crash or hang',
  async (t) => {
    await fc.assert(
      fc.asyncProperty(setup, fc.uint8Array({ maxLength: 200 }), async (s, junk) => {
        const c = createChunkCipher({
          cipher_algorithm: s.name,
          secret_key_strength: s.strength,
          key: s.key,
        });
        try {
          await c.decrypt(junk, c.aead ? Buffer.from(s.aad) : undefined);
          return !c.aead; // GCM must reject every forgery
        } catch (err) {
          return (
            isTdeError(err) &&
            ['ERR_TDE_DECRYPT_FAILED', 'ERR_TDE_CHUNK_LENGTH', 'ERR_TDE_INTEGRITY'].includes(
              err.code,
            )
          );
        } finally {
          c.destroy();
        }
      }),
      { numRuns: 300 },
    );
    t.pass();
  },
);

/**
 * Multi-buffer AES-CBC encryption (native/aes_cbc_mb.cc) keeps up to eight chunks in flight per
 * thread and refills lanes as chunks of different lengths finish. Every chunk of a batch of mixed
 * lengths must decrypt with Node's own OpenSSL to its plaintext, with the engine on and off.
 */
test.serial(
  "AES-CBC batches (multi-buffer and not) decrypt with Node's crypto, for mixed chunk " + 'lengths',
  async (t) => {
    const batchArb = fc.record({
      bits: fc.constantFrom(128, 192, 256),
      padding: fc.boolean(),
      key: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      lengths: fc.array(fc.integer({ min: 0, max: 2100 }), { minLength: 1, maxLength: 40 }),
      multiBuffer: fc.boolean(),
      seed: fc.integer(),
    });
    const wasOn = native().multiBuffer();
    try {
      await fc.assert(
        fc.asyncProperty(batchArb, async ({ bits, padding, key, lengths, multiBuffer, seed }) => {
          native().setMultiBuffer(multiBuffer);
          const k = Buffer.from(key.subarray(0, bits / 8));
          const name = `AES/CBC/${padding ? 'PKCS5Padding' : 'NoPadding'}`;
          const c = createChunkCipher({
            cipher_algorithm: name,
            secret_key_strength: bits,
            key: k,
          });
          try {
            const chunks = lengths.map((n, i) => {
              const len = padding ? n : n - (n % 16);
              const b = Buffer.alloc(len);
              for (let j = 0; j < len; j++) b[j] = (seed + i * 131 + j * 17) & 0xff;
              return b;
            });
            const enc = await c.encryptBatch(chunks);
            return enc.every((e, i) => {
              if (e.length !== c.encryptedLength(chunks[i].length)) return false;
              const d = crypto.createDecipheriv(`aes-${bits}-cbc`, k, e.subarray(0, 16));
              d.setAutoPadding(padding);
              return Buffer.concat([d.update(e.subarray(16)), d.final()]).equals(chunks[i]);
            });
          } finally {
            c.destroy();
          }
        }),
        { numRuns: 200 },
      );
    } finally {
      native().setMultiBuffer(wasOn);
    }
    t.true(native().multiBuffer() === wasOn);
  },
);

test.serial(
  'AES-CBC NoPadding batch: a chunk that is not ' + 'whole blocks is named, whichever engine runs',
  async (t) => {
    const wasOn = native().multiBuffer();
    for (const on of [true, false]) {
      native().setMultiBuffer(on);
      const c = createChunkCipher({
        cipher_algorithm: 'AES/CBC/NoPadding',
        secret_key_strength: 128,
        key: Buffer.alloc(16, 1),
      });
      const chunks = [Buffer.alloc(32), Buffer.alloc(64), Buffer.alloc(33), Buffer.alloc(16)];
      const err = await t.throwsAsync(c.encryptBatch(chunks));
      t.true(isTdeError(err, 'ERR_TDE_CHUNK_LENGTH'));
      t.regex(err!.message, /chunk 2\b.*whole 16-byte blocks; the chunk has 33 bytes/);
      c.destroy();
    }
    native().setMultiBuffer(wasOn);
  },
);

/**
 * AES-CTR, ECB and CBC run in native/aes_ni.cc (ECB padded and unpadded in
 * native/chunk_cipher.cc) and GCM in native/gcm_ni.cc, outside OpenSSL's EVP, unless the addon's
 * AES-NI code is turned off: either way Node's crypto (OpenSSL EVP) must agree with them byte for
 * byte, and each decrypts what the other encrypts. Lengths and additional data reach past GCM's
 * eight-block GHASH steps.
 */
test.serial(
  "AES-CTR, ECB, CBC and GCM chunks agree with Node's crypto both ways, for every length and " +
    'key size',
  async (t) => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(
          'AES/CTR/NoPadding',
          'AES/ECB/PKCS5Padding',
          'AES/ECB/NoPadding',
          'AES/CBC/PKCS5Padding',
          'AES/CBC/NoPadding',
          'AES/GCM/NoPadding',
        ),
        fc.constantFrom(128, 192, 256),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.array(fc.integer({ min: 0, max: 7000 }), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        fc.uint8Array({ maxLength: 300 }),
        async (name, bits, keyBytes, lengths, aesNi, aadBytes) => {
          const key = Buffer.from(keyBytes.subarray(0, bits / 8));
          const mode = name.split('/')[1].toLowerCase();
          const ivLength = { ecb: 0, gcm: 12 }[mode] ?? 16;
          const tagLength = mode === 'gcm' ? 16 : 0;
          const chunks = lengths.map((n, i) => {
            const len = name.endsWith('/NoPadding') && /ecb|cbc/.test(mode) ? n - (n % 16) : n;
            return Buffer.alloc(len, (i * 37 + len) & 0xff);
          });
          const aad = tagLength ? chunks.map(() => Buffer.from(aadBytes)) : undefined;
          // Off: every AES mode goes through OpenSSL's EVP, the reference.
          const wasOn = native().multiBuffer();
          native().setMultiBuffer(aesNi);
          const c = createChunkCipher({ cipher_algorithm: name, secret_key_strength: bits, key });
          try {
            const enc = await c.encryptBatch(chunks, undefined, aad);
            const dec = await c.decryptBatch(enc, undefined, aad);
            return enc.every((e, i) => {
              const iv = ivLength ? e.subarray(0, ivLength) : null;
              const node = crypto.createCipheriv(
                `aes-${bits}-${mode}`,
                key,
                iv,
              ) as crypto.CipherGCM;
              node.setAutoPadding(name.endsWith('PKCS5Padding'));
              if (tagLength) node.setAAD(aadBytes);
              const body = Buffer.concat([node.update(chunks[i]), node.final()]);
              const expect = tagLength ? Buffer.concat([body, node.getAuthTag()]) : body;
              return e.subarray(ivLength).equals(expect) && dec[i].equals(chunks[i]);
            });
          } finally {
            c.destroy();
            native().setMultiBuffer(wasOn);
          }
        },
      ),
      { numRuns: 200 },
    );
    t.pass();
  },
);

test('AES-CTR counts across 64-bit and 128-bit carries as JCE and OpenSSL do', async (t) => {
  const key = Buffer.alloc(16, 9);
  const c = createChunkCipher({
    cipher_algorithm: 'AES/CTR/NoPadding',
    secret_key_strength: 128,
    key,
  });
  const plain = Buffer.alloc(16 * 20 + 5, 0x41);
  for (const ivHex of [
    '0000000000000000fffffffffffffffe',
    'fffffffffffffffffffffffffffffffd',
    '00000000000000000000000000000000',
  ]) {
    const iv = Buffer.from(ivHex, 'hex');
    const node = crypto.createCipheriv('aes-128-ctr', key, iv);
    const chunk = Buffer.concat([iv, node.update(plain), node.final()]);
    const [dec] = await c.decryptBatch([chunk]);
    t.true(dec.equals(plain), ivHex);
  }
  c.destroy();
});
