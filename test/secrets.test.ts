/**
 * Secrets: every command is run, with good input and bad, in process and as a process (with
 * debugging stacks on), and library errors are inspected whole (message, stack, cause chain).
 * Then all of that output is searched for every key in play, in every form a leak could take:
 * raw bytes, hex in either case, base64 with or without padding, base64url, the key file line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inspect } from 'node:util';

import test from 'ava';

import { readConfig } from '../src/config/config';
import { readJceksSecretKey } from '../src/config/jceks';
import { loadConfig } from '../src/config/secure-values';
import { createKeyFile, parseKeyFile, readKeyFile } from '../src/keys/key-file';
import { KeyProviders } from '../src/keys/provider';
import { KmipClient } from '../src/kmip/client';
import { SSTableReader } from '../src/sstable/reader';
import {
  cli,
  cliProcess,
  cliWithInput,
  FIXTURES,
  makeDataDir,
  onlySSTable,
  tempDir,
} from './helpers';
import { groupFor, KmipServer, kmipYaml, startKmipServer } from './kmip/helpers';

let server: KmipServer;
test.before(async () => {
  server = await startKmipServer();
});
test.after.always(() => server?.stop());

/** The forms in which a key could leak into text. */
function forms(key: Buffer): [string, string][] {
  const b64 = key.toString('base64');
  return [
    ['raw bytes (latin1)', key.toString('latin1')],
    ['raw bytes (utf8)', key.toString('utf8')],
    ['hex', key.toString('hex')],
    ['HEX', key.toString('hex').toUpperCase()],
    ['base64', b64],
    ['base64 without padding', b64.replace(/=+$/, '')],
    ['base64url', key.toString('base64url')],
  ];
}

test('no output, log or error of any command shows key material', async (t) => {
  const dir = tempDir('secrets');
  const config = path.join(dir, 'dse.yaml');
  fs.writeFileSync(
    config,
    `system_key_directory: ${dir}\nconfig_encryption_active: true\n` +
      `ldap_options:\n  search_password: PLACEHOLDER\nkmip_hosts:\n${kmipYaml(server, 'g')}`,
  );
  createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  createKeyFile(dir, 'gcm_key', 'AES/GCM/NoPadding', 256);
  createKeyFile(dir, 'des_key', 'DESede/CBC/PKCS5Padding', 168);

  const outputs: { label: string; text: string; raw?: Buffer }[] = [];
  const c = async (...args: string[]) => {
    const r = await cli(...args);
    outputs.push({ label: args.join(' '), text: r.stdout + r.stderr });
    return r;
  };
  const withConfig = (...args: string[]) => c(...args, '--config', config);

  // Encrypted configuration value (read from a pipe), then used by loadConfig.
  const enc = cliWithInput(['encryptconfigvalue', '--config', config], 'ldap-search-secret\n');
  outputs.push({ label: 'encryptconfigvalue', text: enc.stdout + enc.stderr });
  t.is(enc.code, 0, enc.stderr);
  fs.writeFileSync(
    config,
    fs
      .readFileSync(config, 'utf8')
      .replace('PLACEHOLDER', /Your encrypted value is: (\S+)/.exec(enc.stdout)![1]),
  );
  t.is(
    ((await loadConfig(config)).values.ldap_options as Record<string, string>).search_password,
    'ldap-search-secret',
  );

  // Keys: local files, a KMIP key made up front, and the tables' keys.
  await withConfig('createsystemkey', 'AES/CBC/PKCS5Padding', '128', 'extra_key', '-d', dir);
  await withConfig(
    'createsystemkey',
    'AES/CBC/PKCS5Padding',
    '128',
    'extra_key',
    '-d',
    dir,
    '--json',
  );
  await withConfig('createsystemkey', 'AES', '512', 'bad_key', '-d', dir);
  await withConfig('createsystemkey', 'AES/CBC/PKCS5Padding', '256', '-k', 'g', '-n', 'secrets');
  await withConfig(
    'createsystemkey',
    'AES/CBC/PKCS5Padding',
    '256',
    '-k',
    'g',
    '-n',
    'secrets',
    '--json',
  );
  await withConfig('createsystemkey', 'AES/CBC/PKCS5Padding', '256', '-k', 'nogroup');

  const dataDir = makeDataDir((x) =>
    ['legacy_nb_clust', 'legacy_da_clust', 'legacy_oa_simple', 'pk_types_deflate'].includes(
      x.table,
    ),
  );
  const schema = path.join(dir, 'encrypt.cql');
  fs.writeFileSync(
    schema,
    [
      'ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = ' +
        "{'class': 'EncryptingLZ4Compressor'};",
      'ALTER TABLE legacy_tables.legacy_da_clust WITH compression = ' +
        "{'class': 'EncryptingSnappyCompressor', 'cipher_algorithm': 'AES/GCM/NoPadding', " +
        "'secret_key_strength': 256, 'system_key_file': 'gcm_key'};",
      "ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor', " +
        "'cipher_algorithm': 'DESede/CBC/PKCS5Padding', 'secret_key_strength': 168, " +
        "'system_key_file': 'des_key'};",
      'ALTER TABLE test_ks.pk_types_deflate WITH compression = ' +
        "{'class': 'EncryptingDeflateCompressor', 'key_provider': 'KmipKeyProviderFactory', " +
        "'kmip_host': 'g', 'key_namespace': 'secrets', 'secret_key_strength': 256};",
    ].join('\n'),
  );
  const decrypt = path.join(dir, 'decrypt.cql');
  fs.writeFileSync(
    decrypt,
    fs
      .readFileSync(schema, 'utf8')
      .replace(/\{'class': '\w+'.*\};/g, "{'class': 'LZ4Compressor'};"),
  );
  t.is((await withConfig('upgradesstables', '--data-dir', dataDir, '--schema', schema)).code, 0);
  for (const args of [
    ['verify', '--data-dir', dataDir],
    ['verify', '--data-dir', dataDir, '--json'],
    ['describe', '--data-dir', dataDir],
    ['describe', '--data-dir', dataDir, '--json'],
    ['upgradesstables', '--data-dir', dataDir, '--schema', schema, '--json'],
    ['managekmip', 'list', 'g'],
    ['managekmip', 'list', 'g', '--json'],
  ]) {
    t.is((await withConfig(...args)).code, 0, args.join(' '));
  }

  // Bad input of every kind.
  const nb = onlySSTable(path.join(dataDir, 'legacy_tables', 'legacy_nb_clust'));
  const data = path.join(nb.dir, `nb-${nb.generation}-big-Data.db`);
  const good = fs.readFileSync(data);
  const flipped = Buffer.from(good);
  flipped[100] ^= 1;
  fs.writeFileSync(data, flipped);
  await withConfig('verify', '--data-dir', dataDir);
  await withConfig('verify', '--data-dir', dataDir, '--json');
  fs.writeFileSync(data, good);

  const keyFile = path.join(dir, 'system_key');
  const original = fs.readFileSync(keyFile);
  fs.renameSync(keyFile, `${keyFile}.old`);
  createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 128); // another key under the same name
  await withConfig('verify', '--data-dir', dataDir);
  await withConfig('upgradesstables', '--data-dir', dataDir, '--schema', decrypt);
  await withConfig('upgradesstables', '--data-dir', dataDir, '--schema', decrypt, '--json');
  const asProcess = await cliProcess(
    ['upgradesstables', '--data-dir', dataDir, '--schema', decrypt, '--config', config],
    { SSTABLE_TDE_DEBUG: '1' },
  );
  t.is(asProcess.code, 1);
  const replaced = readKeyFile(keyFile)[0].key;
  fs.rmSync(keyFile);
  fs.renameSync(`${keyFile}.old`, keyFile);
  outputs.push({
    label: 'upgradesstables with a wrong key, as a process',
    text: asProcess.stdout + asProcess.stderr,
  });

  fs.chmodSync(keyFile, 0o644);
  await withConfig('verify', '--data-dir', dataDir);
  fs.chmodSync(keyFile, 0o600);
  const [line] = original.toString().trim().split('\n');
  fs.writeFileSync(keyFile, line.split(':').reverse().join(':') + '\n', { mode: 0o600 });
  await withConfig('verify', '--data-dir', dataDir);
  await withConfig('encryptconfigvalue');
  fs.writeFileSync(keyFile, original, { mode: 0o600 });

  // A key pasted where a setting or option belongs.
  const b64 = readKeyFile(keyFile)[0].key.toString('base64');
  const pasted = path.join(dir, 'pasted.yaml');
  fs.writeFileSync(pasted, `system_key_directory: ${b64}\nconfig_encryption_key_name: ${b64}\n`);
  await c('verify', '--data-dir', dataDir, '--config', pasted);
  const pastedSchema = path.join(dir, 'pasted.cql');
  fs.writeFileSync(
    pastedSchema,
    "ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': 'Encryptor', " +
      `'cipher_algorithm': '${b64}', 'system_key_file': '${b64}'};`,
  );
  await withConfig('upgradesstables', '--data-dir', dataDir, '--schema', pastedSchema);

  // Key administration, good and refused.
  const listed = JSON.parse((await withConfig('managekmip', 'list', 'g', '--json')).stdout) as {
    id: string;
    namespace: string;
  }[];
  const spare = JSON.parse(
    (await withConfig('createsystemkey', 'AES/CBC/PKCS5Padding', '128', '-k', 'g', '--json'))
      .stdout,
  );
  const spareId = String(spare.id);
  await withConfig('managekmip', 'expirekey', 'g', spareId);
  await withConfig('managekmip', 'destroy', 'g', spareId);
  await withConfig('managekmip', 'revoke', 'g', spareId, '-m', 'test');
  await withConfig('managekmip', 'destroy', 'g', spareId, '--data-dir', dataDir);
  for (const row of listed)
    await withConfig('managekmip', 'destroy', 'g', row.id, '--data-dir', dataDir);
  await withConfig('managekmip', 'revoke', 'g', '999999');

  // Commit log segments with Cassandra's JCEKS store: right and wrong passwords.
  const store = path.join(FIXTURES, 'commitlog', 'cassandra.keystore');
  const segment = path.join(
    FIXTURES,
    'commitlog',
    '3.4-encrypted',
    'CommitLog-6-1480001790339.log',
  );
  await c('commitlog', 'verify', segment, '--keystore', store, '--keystore-password', 'cassandra');
  await c(
    'commitlog',
    'verify',
    segment,
    '--keystore',
    store,
    '--keystore-password',
    'cassandra',
    '--json',
  );
  await c('commitlog', 'verify', segment, '--keystore', store, '--keystore-password', 'wrong');
  await c(
    'commitlog',
    'verify',
    segment,
    '--keystore',
    store,
    '--keystore-password',
    'cassandra',
    '--key-password',
    'wrong',
  );

  // Library errors, inspected whole: message, stack, cause chain and properties.
  const libraryErrors: unknown[] = [];
  const catching = async (fn: () => unknown) => {
    try {
      await fn();
    } catch (err) {
      libraryErrors.push(err);
    }
  };
  const wrongDir = tempDir('wrongkeys');
  createKeyFile(wrongDir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const wrongKeys = new KeyProviders(readConfig(config));
  await catching(async () => {
    const other = new KeyProviders({ ...readConfig(config), systemKeyDirectory: wrongDir });
    try {
      await SSTableReader.open(
        onlySSTable(path.join(dataDir, 'legacy_tables', 'legacy_nb_clust')),
        { keys: other },
      );
    } finally {
      other.close();
    }
  });
  await catching(() => parseKeyFile(line.split(':').reverse().join(':'), 'kf'));
  await catching(() => parseKeyFile(`${line}x`, 'kf'));
  await catching(() => readJceksSecretKey(store, 'cassandra', 'testing:1', 'wrong'));
  fs.writeFileSync(
    path.join(wrongDir, 'dse.yaml'),
    fs.readFileSync(config, 'utf8').replace(dir, wrongDir),
  );
  await catching(() => loadConfig(path.join(wrongDir, 'dse.yaml')));
  // The providers themselves, after use, as a log line or JSON would show them.
  await wrongKeys.kmipProvider.client('g').locate([]);
  const inspected = [
    inspect(wrongKeys, { depth: 10, showHidden: true }),
    JSON.stringify(wrongKeys) ?? '',
  ];
  wrongKeys.close();
  t.is(libraryErrors.length, 5, libraryErrors.map((e) => (e as Error).message).join('\n'));
  for (const err of libraryErrors) {
    outputs.push({
      label: `library error ${(err as Error).message.slice(0, 60)}`,
      text: inspect(err, { depth: 10, showHidden: true }) + (err as Error).stack,
    });
  }
  outputs.push({ label: 'KeyProviders inspected', text: inspected.join('\n') });

  // Every key in play.
  const secrets: { name: string; key: Buffer }[] = [];
  for (const name of ['system_key', 'gcm_key', 'des_key', 'extra_key']) {
    for (const e of readKeyFile(path.join(dir, name))) secrets.push({ name, key: e.key });
  }
  secrets.push({ name: 'the key that replaced system_key for a while', key: replaced });
  const client = new KmipClient(groupFor(server));
  try {
    for (const row of JSON.parse(
      (await cli('managekmip', 'list', 'g', '--json', '--config', config)).stdout,
    ) as { id: string }[]) {
      secrets.push({
        name: `KMIP key ${row.id}`,
        key: await client.getKey(row.id).catch(() => Buffer.alloc(0)),
      });
    }
  } finally {
    client.close();
  }
  for (const alias of ['testing:1', 'Testing:2'])
    secrets.push({
      name: `JCEKS ${alias}`,
      key: readJceksSecretKey(store, 'cassandra', alias).key,
    });
  const realSecrets = secrets.filter((s) => s.key.length > 0);
  t.true(realSecrets.length >= 9, `${realSecrets.length} keys`);
  t.true(outputs.length >= 40, `${outputs.length} outputs`);

  const lines = ['system_key', 'gcm_key', 'des_key', 'extra_key'].map((n) =>
    fs.readFileSync(path.join(dir, n), 'utf8').trim(),
  );
  for (const o of outputs) {
    for (const s of realSecrets) {
      for (const [form, text] of forms(s.key)) {
        if (o.text.includes(text)) t.fail(`"${o.label}" shows ${s.name} as ${form}`);
      }
    }
    for (const l of lines) if (o.text.includes(l)) t.fail(`"${o.label}" shows a key file line`);
  }
  t.pass();
});

test('a key file that group or others may access is refused, with the chmod', async (t) => {
  const dir = tempDir('keymodes');
  const { file } = createKeyFile(dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const config = path.join(dir, 'dse.yaml');
  fs.writeFileSync(config, `system_key_directory: ${dir}\n`);
  const dataDir = makeDataDir((x) => x.table === 'legacy_oa_simple');
  const schema = path.join(dir, 's.cql');
  fs.writeFileSync(
    schema,
    "ALTER TABLE legacy_tables.legacy_oa_simple WITH compression = {'class': 'Encryptor'};",
  );
  for (const mode of [0o640, 0o620, 0o610, 0o604, 0o602, 0o601, 0o660, 0o644, 0o666]) {
    fs.chmodSync(file, mode);
    const err = t.throws(() => readKeyFile(file), { code: 'ERR_TDE_KEY_FILE' });
    t.is(
      err!.message,
      `system key file ${file} can be accessed by group or others (mode ${mode.toString(8)}); ` +
        `restrict it with: chmod 600 ${file}`,
    );
    const r = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      config,
    );
    t.is(r.code, 1);
    t.true(r.stdout.includes(`restrict it with: chmod 600 ${file}`), r.stdout);
  }
  fs.chmodSync(file, 0o400);
  t.is(readKeyFile(file).length, 1, 'owner-only modes are accepted');
  fs.chmodSync(file, 0o600);
  t.is(
    (await cli('upgradesstables', '--data-dir', dataDir, '--schema', schema, '--config', config))
      .code,
    0,
  );
});
