import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { decryptValue } from '../src/config/secure-values';
import { createKeyFile, readKeyFile } from '../src/keys/key-file';
import { cli, cliProcess, cliWithInput, makeDataDir, makeKeySetup, ROOT } from './helpers';

test('--help of every command shows examples and exits 0', async (t) => {
  for (const cmd of ['createsystemkey', 'upgradesstables', 'verify', 'describe']) {
    const r = await cli(cmd, '--help');
    t.is(r.code, 0);
    t.regex(r.stdout, /Examples:/, cmd);
  }
  const top = await cli('--help');
  t.is(top.code, 0);
  t.regex(top.stdout, /upgradesstables/);
});

test(
  'usage errors exit 2: no command, unknown ' + 'command, unknown option, missing required option',
  async (t) => {
    t.is((await cli()).code, 2);
    t.is((await cli('upgradesstable')).code, 2);
    t.is((await cli('verify', '--data-dir', '.', '--bogus')).code, 2);
    const missing = await cli('upgradesstables', '--data-dir', '.');
    t.is(missing.code, 2);
    t.regex(missing.stderr, /--schema/);
    const none = await cli('verify');
    t.is(none.code, 2);
    t.regex(none.stderr, /required option '--data-dir <dir>' not specified/);
    // A mistyped option is named as such, with the option meant, not reported as the required
    // option missing.
    const typo = await cli('describe', '--datadir', '.');
    t.is(typo.code, 2);
    t.regex(typo.stderr, /unknown option '--datadir'/);
    t.regex(typo.stderr, /Did you mean --data-dir\?/);
    t.notRegex(typo.stderr, /required option/);
  },
);

test('a missing data directory is a failure (exit 1) that names it', async (t) => {
  const r = await cli('describe', '--data-dir', '/nonexistent/data');
  t.is(r.code, 1);
  t.regex(r.stderr, /ERR_TDE_IO.*\/nonexistent\/data.*does not exist/);
  t.regex(r.stderr, /give the directory that holds the keyspace directories/);
  const ks = await cli(
    'describe',
    '--data-dir',
    makeDataDir((c) => c.table === 'legacy_me_simple'),
    'nosuchks',
  );
  t.regex(ks.stderr, /keyspace nosuchks is not in .*found: legacy_tables/);
});

test('no command prints key bytes: the key appears in no output, JSON or text', async (t) => {
  const dataDir = makeDataDir((c) => c.table === 'legacy_nb_clust');
  const keys = makeKeySetup();
  createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const keyB64 = fs.readFileSync(path.join(keys.dir, 'system_key'), 'utf8').trim().split(':')[2];
  const keyHex = Buffer.from(keyB64, 'base64').toString('hex');
  const schema = path.join(keys.dir, 's.cql');
  fs.writeFileSync(
    schema,
    `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor'};`,
  );

  const outputs: string[] = [];
  for (const json of [[], ['--json']]) {
    for (const args of [
      [
        'upgradesstables',
        '--data-dir',
        dataDir,
        '--schema',
        schema,
        '--config',
        keys.configFile,
        '-a',
        ...json,
      ],
      ['verify', '--data-dir', dataDir, '--config', keys.configFile, ...json],
      ['describe', '--data-dir', dataDir, ...json],
    ]) {
      const r = await cli(...args);
      t.is(r.code, 0, r.stderr);
      outputs.push(r.stdout, r.stderr);
    }
  }
  const all = outputs.join('\n');
  t.regex(all, /Encryptor/);
  t.false(all.includes(keyB64));
  t.false(all.toLowerCase().includes(keyHex));
});

test('the built command runs as a process with documented exit codes', async (t) => {
  const ok = await cliProcess([
    'describe',
    '--data-dir',
    makeDataDir((c) => c.table === 'legacy_me_simple'),
    '--json',
  ]);
  t.is(ok.code, 0);
  t.is(JSON.parse(ok.stdout)[0].compressor, 'LZ4Compressor');
  t.is((await cliProcess(['verify'])).code, 2);
  const bin = path.join(ROOT, 'bin', 'sstable-tde.js');
  t.regex(execFileSync(process.execPath, [bin, '--version']).toString(), /^\d+\.\d+\.\d+/);
});

test(
  'encryptconfigvalue refuses an empty value and ' + 'keeps a character split between pipe reads',
  async (t) => {
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    for (const input of ['', '\n']) {
      const r = cliWithInput(['encryptconfigvalue', '--config', keys.configFile], input);
      t.is(r.code, 1, JSON.stringify(input));
      t.regex(r.stderr, /ERR_TDE_INVALID_ARGUMENT.*value to encrypt is empty.*nothing was/);
      t.is(r.stdout, '', 'no encrypted value is printed');
    }
    // Two lines are two values, or a file piped in by mistake: never only the first encrypted.
    const two = cliWithInput(['encryptconfigvalue', '--config', keys.configFile], 'a\nb\n');
    t.is(two.code, 1);
    t.regex(two.stderr, /standard input holds more than one line.*nothing was encrypted/);
    t.is(two.stdout, '');

    // "pä" then the rest: the two bytes of "ä" arrive in two reads of the pipe.
    const value = Buffer.from('päss', 'utf8');
    const child = spawn(process.execPath, [
      '--import=tsx',
      path.join(ROOT, 'src/cli/run.ts'),
      'encryptconfigvalue',
      '--config',
      keys.configFile,
      '--json',
    ]);
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stdin.write(value.subarray(0, 2));
    // It reads once it has named its key; give that read time to take the first part alone.
    await new Promise((resolve) => child.stderr.once('data', resolve));
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.stdin.end(Buffer.concat([value.subarray(2), Buffer.from('\n')]));
    const code = await new Promise((resolve) => child.on('close', resolve));
    t.is(code, 0);
    const [entry] = readKeyFile(path.join(keys.dir, 'system_key'));
    const cipher = createChunkCipher({
      cipher_algorithm: entry.transformation,
      secret_key_strength: entry.strength,
      key: entry.key,
    });
    t.is(decryptValue(cipher, JSON.parse(stdout).value), 'päss');
    cipher.destroy();
  },
);
