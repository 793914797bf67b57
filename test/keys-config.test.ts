import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { configFromObject, readConfig } from '../src/config/config';
import { resolveCipher } from '../src/cipher/transformation';
import { EncryptionSettings, LOCAL_PROVIDER } from '../src/compression/options';
import { createKeyFile, parseKeyFile, readKeyFile } from '../src/keys/key-file';
import { KeyProviders } from '../src/keys/provider';
import { cli, tempDir } from './helpers';

test('createsystemkey writes one DSE key line, mode 0600, and refuses to overwrite', async (t) => {
  const dir = tempDir('keys');
  const r = await cli('createsystemkey', 'AES/ECB/PKCS5Padding', '128', '-d', dir);
  t.is(r.code, 0, r.stderr);
  const file = path.join(dir, 'system_key');
  t.is(fs.statSync(file).mode & 0o777, 0o600);
  const text = fs.readFileSync(file, 'utf8');
  t.regex(text, /^AES\/ECB\/PKCS5Padding:128:[A-Za-z0-9+/]{22}==\n$/);
  // 50 bytes on disk, as the DSE documentation's ls -l shows for such a key file.
  t.is(text.length, 50);
  t.false(r.stdout.includes(text.split(':')[2].trim()), 'the key must not be printed');

  const again = await cli('createsystemkey', 'AES/ECB/PKCS5Padding', '128', '-d', dir);
  t.is(again.code, 1);
  t.regex(again.stderr, /ERR_TDE_KEY_EXISTS.*already exists/);
  t.is(fs.readFileSync(file, 'utf8'), text);
});

test('createsystemkey takes a name and every cipher, and the key file reads back', async (t) => {
  const dir = tempDir('keys');
  for (const [cipher, bits, len] of [
    ['DESede/CBC/PKCS5Padding', '112', 24],
    ['Blowfish', '448', 56],
    ['RC2/ECB/NoPadding', '40', 5],
  ] as const) {
    const name = `k_${bits}`;
    const r = await cli('createsystemkey', cipher, bits, name, '-d', dir, '--json');
    t.is(r.code, 0, r.stderr);
    t.is(JSON.parse(r.stdout).file, path.join(dir, name));
    const [entry] = readKeyFile(path.join(dir, name));
    t.is(entry.key.length, len);
  }
  // DESede 112 keys are stored as JCE stores them: k1 k2 k1.
  const [des] = readKeyFile(path.join(dir, 'k_112'));
  t.true(des.key.subarray(0, 8).equals(des.key.subarray(16, 24)));
});

test(
  'createsystemkey rejects an unknown cipher ' + 'or strength with usage-friendly errors',
  async (t) => {
    const dir = tempDir('keys');
    const r = await cli('createsystemkey', 'AES/XTS/PKCS5Padding', '128', '-d', dir);
    t.is(r.code, 1);
    t.regex(r.stderr, /ERR_TDE_UNKNOWN_CIPHER.*ECB or CBC/);
    const s = await cli('createsystemkey', 'AES', '512', '-d', dir);
    t.regex(s.stderr, /ERR_TDE_KEY_STRENGTH.*128, 192 or 256/);
    t.deepEqual(fs.readdirSync(dir), []);
  },
);

test('a damaged key file line is reported with its line number and never quotes a field', (t) => {
  const secret = 'c2VjcmV0c2VjcmV0c2VjcmV0';
  t.throws(() => parseKeyFile(`AES/CBC/PKCS5Padding:128:${secret}\n`, 'kf'), {
    code: 'ERR_TDE_KEY_FILE',
    message:
      /line 1 of key file kf: the key has 18 bytes, but AES 128-bit keys have 16; .*restore it/,
  });
  const err = t.throws(() => parseKeyFile(`AES/CBC/PKCS5Padding:128\n`, 'kf'), {
    code: 'ERR_TDE_KEY_FILE',
  });
  t.regex(err!.message, /ALG\/MODE\/PADDING:BITS:BASE64KEY/);
  // Fields in the wrong order put the key where the cipher or strength belongs: never echo it.
  for (const line of [
    `AES/CBC/PKCS5Padding:${secret}:128`,
    `${secret}:AES/CBC/PKCS5Padding:128`,
    `AES/CBC/PKCS5Padding:129:${secret}`,
  ]) {
    const leak = t.throws(() => parseKeyFile(line, 'kf'), { code: 'ERR_TDE_KEY_FILE' });
    t.false(leak!.message.includes(secret), leak!.message);
  }
});

test('a key file that is a symbolic link or world-readable is refused', (t) => {
  const dir = tempDir('keys');
  const { file } = createKeyFile(dir, 'real', 'AES/CBC/PKCS5Padding', 128);
  fs.symlinkSync(file, path.join(dir, 'link'));
  t.throws(() => readKeyFile(path.join(dir, 'link')), {
    code: 'ERR_TDE_KEY_FILE',
    message: /symbolic link/,
  });
  fs.chmodSync(file, 0o604);
  t.throws(() => readKeyFile(file), { message: /chmod 600/ });
});

test(
  'config: relative system_key_directory resolves beside the file; unknown settings are named ' +
    'with a suggestion',
  (t) => {
    const dir = tempDir('config');
    const file = path.join(dir, 'dse.yaml');
    fs.writeFileSync(file, 'system_key_directory: keys\n');
    t.is(readConfig(file).systemKeyDirectory, path.join(dir, 'keys'));
    fs.writeFileSync(file, 'system_key_directry: keys\nconfig_encryption_active: maybe\n');
    const err = t.throws(() => readConfig(file), { code: 'ERR_TDE_CONFIG' });
    t.regex(
      err!.message,
      /unknown setting "system_key_directry" \(did you mean "system_key_directory"\?\)/,
    );
    t.regex(err!.message, /config_encryption_active must be true or false/);
    fs.writeFileSync(file, 'system_key_directory: [unclosed\n');
    t.throws(() => readConfig(file), { message: /not valid YAML/ });
    // Where, by line and column, without quoting the file (it may hold passwords).
    fs.writeFileSync(file, 'system_key_directory: /k\nldap_options:\n  search_password: a: b\n');
    const bad = t.throws(() => readConfig(file), { code: 'ERR_TDE_CONFIG' });
    t.regex(bad!.message, /not valid YAML at line 3, column \d+: /);
    t.false(bad!.message.includes('search_password'));
    // What follows * or ! is a name to YAML, and may be a password: never quoted back.
    for (const [secret, meaning] of [
      ['*Tr0ub4dor&3', /starts with & or \* is read as a YAML anchor or alias/],
      ['!S3cr3t!pw', /starts with ! is read as a tag/],
      // Anchors and tags YAML accepts would silently blank the value: refused too.
      ['&Tru5tPw', /starts with & or \* is read as a YAML anchor or alias/],
      ['!S3cret Pw', /starts with ! is read as a tag/],
    ] as const) {
      fs.writeFileSync(file, `ldap_options:\n  search_password: ${secret}\n`);
      const e = t.throws(() => readConfig(file), { code: 'ERR_TDE_CONFIG' });
      t.regex(e!.message, meaning);
      t.regex(e!.message, /put such a value \(a password\?\) in quotes/);
      t.false(e!.message.includes(secret.slice(1)), secret);
    }
    t.is(configFromObject({}).systemKeyDirectory, '/etc/dse/conf');
  },
);

test('a missing key file or directory is named, with the command that makes the key', async (t) => {
  const dir = tempDir('keys');
  const choice = resolveCipher('DESede/CBC/PKCS5Padding', 168);
  const settings: EncryptionSettings = {
    cipherAlgorithm: choice.name,
    strength: 168,
    keyProvider: LOCAL_PROVIDER,
    systemKeyFile: 'newkey',
  };
  const keys = new KeyProviders(configFromObject({ system_key_directory: dir }));
  const missingFile = await t.throwsAsync(keys.keyFor(settings, choice), {
    code: 'ERR_TDE_KEY_FILE',
  });
  t.regex(missingFile!.message, /system key file .*newkey does not exist/);
  t.true(
    missingFile!.message.includes(`createsystemkey DESede/CBC/PKCS5Padding 168 newkey -d ${dir}`),
    missingFile!.message,
  );
  keys.close();

  const gone = path.join(dir, 'not-made');
  const elsewhere = new KeyProviders(configFromObject({ system_key_directory: gone }));
  const missingDir = await t.throwsAsync(elsewhere.keyFor(settings, choice), {
    code: 'ERR_TDE_KEY_FILE',
  });
  t.regex(
    missingDir!.message,
    /system key directory .*not-made does not exist \(looking for key file newkey\)/,
  );
  elsewhere.close();
  // The CLI's own readers, which know no cipher, still show where to put one.
  t.throws(() => readKeyFile(path.join(dir, 'other')), {
    message: /createsystemkey CIPHER STRENGTH other -d /,
  });
});
