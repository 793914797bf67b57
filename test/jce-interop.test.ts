/**
 * Agreement with Java's JCE in both directions, by running Java itself (tools/jce/JceTool.java):
 * what sstable-tde encrypts, Java decrypts; what Java generates, sstable-tde decrypts and (ECB)
 * re-encrypts byte for byte.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';

import test from 'ava';

import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { resolveCipher, supportedTransformations } from '../src/cipher/transformation';
import { ROOT } from './helpers';

const TOOL = path.join(ROOT, 'tools', 'jce', 'JceTool.java');
const java = (args: string[], input = '') =>
  execFileSync('java', [TOOL, ...args], { input, maxBuffer: 64 * 1024 * 1024 }).toString();

const STRENGTHS: Record<string, number[]> = {
  AES: [128, 256],
  DES: [56],
  DESede: [112, 168],
  Blowfish: [32, 448],
  RC2: [40, 128],
};

test(
  'Java decrypts what sstable-tde encrypts, for every transformation (CBC, CTR and GCM ' +
    'included)',
  async (t) => {
    const lines: string[] = [];
    const expected: string[] = [];
    for (const name of supportedTransformations()) {
      for (const bits of STRENGTHS[name.split('/')[0]]) {
        const choice = resolveCipher(name, bits);
        const key = crypto.randomBytes(choice.keyLength);
        if (name.startsWith('DESede') && bits === 112) key.copy(key, 16, 0, 8);
        const c = createChunkCipher({ cipher_algorithm: name, secret_key_strength: bits, key });
        const lengths =
          choice.padding === 'NoPadding' && (choice.mode === 'ECB' || choice.mode === 'CBC')
            ? [16, 64, 4096]
            : [0, 1, 17, 4095];
        for (const len of lengths) {
          const plain = crypto.randomBytes(len);
          const aad = c.aead ? crypto.randomBytes(45) : undefined;
          const chunk = await c.encrypt(plain, aad);
          lines.push(
            [name, bits, key.toString('hex'), chunk.toString('hex'), aad?.toString('hex')]
              .filter((x) => x !== undefined)
              .join(' '),
          );
          expected.push(plain.toString('hex'));
        }
        c.destroy();
      }
    }
    const answers = java(['decrypt'], lines.join('\n') + '\n')
      .replace(/\n$/, '')
      .split('\n');
    t.is(answers.length, expected.length);
    answers.forEach((a, i) => t.is(a, expected[i], lines[i].split(' ').slice(0, 2).join(' ')));
  },
);

test(
  'vectors Java generates now decrypt with ' + 'sstable-tde, and ECB ones re-encrypt byte for byte',
  async (t) => {
    const vectors = JSON.parse(java(['vectors', '4242'])) as {
      transformation: string;
      secret_key_strength: number;
      key: string;
      iv: string | null;
      plaintext: string;
      ciphertext: string;
    }[];
    t.true(vectors.length > 250);
    for (const v of vectors) {
      const c = createChunkCipher({
        cipher_algorithm: v.transformation,
        secret_key_strength: v.secret_key_strength,
        key: Buffer.from(v.key, 'hex'),
      });
      const stored = Buffer.from((v.iv ?? '') + v.ciphertext, 'hex');
      t.is((await c.decrypt(stored)).toString('hex'), v.plaintext);
      if (v.iv === null)
        t.is((await c.encrypt(Buffer.from(v.plaintext, 'hex'))).toString('hex'), v.ciphertext);
      c.destroy();
    }
  },
);
