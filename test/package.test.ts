import { execFileSync } from 'node:child_process';

import test from 'ava';

import { ROOT } from './helpers';

const SNIPPET = (load: string) =>
  `
  ${load}
  const c = m.createChunkCipher({ cipher_algorithm: 'AES/CBC/PKCS5Padding', ` +
  `secret_key_strength: 128, key: Buffer.alloc(16, 1) });
  c.encrypt(Buffer.from('hello')).then((e) => c.decrypt(e)).then((d) => { c.destroy(); ` +
  `console.log(d.toString(), typeof m.upgradeSSTables, typeof m.TdeError); });
`;

test('the package main works with require()', (t) => {
  const out = execFileSync(process.execPath, ['-e', SNIPPET("const m = require('sstable-tde');")], {
    cwd: ROOT,
  }).toString();
  t.is(out.trim(), 'hello function function');
});

test('the package main works with import, named exports included', (t) => {
  const out = execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      SNIPPET(
        "import * as m from 'sstable-tde'; import { createChunkCipher } from 'sstable-tde'; if " +
          "(typeof createChunkCipher !== 'function') throw new Error('no named export');",
      ),
    ],
    { cwd: ROOT },
  ).toString();
  t.is(out.trim(), 'hello function function');
});
