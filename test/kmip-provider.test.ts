/**
 * KMIP-keyed tables end to end against a real PyKMIP server: key stores, choice, cache, lifecycle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { resolveCipher } from '../src/cipher/transformation';
import { systemInfoKey } from '../src/commitlog/system';
import { createKmipKey } from '../src/keys/kmip-admin';
import { EncryptionSettings } from '../src/compression/options';
import { configFromObject, readConfig } from '../src/config/config';
import { keyStateOf, usableForEncryption, pickCurrentKey } from '../src/keys/kmip-provider';
import { KeyProviders } from '../src/keys/provider';
import { parseCompressionInfo } from '../src/sstable/compression-info';
import { componentPath } from '../src/sstable/descriptor';
import { cli, makeDataDir, onlySSTable, readAll, tempDir } from './helpers';
import { KmipServer, kmipYaml, startKmipServer } from './kmip/helpers';

let server: KmipServer;
test.before(async () => {
  server = await startKmipServer();
});
test.after.always(() => server?.stop());

function configFile(groups: string): string {
  const dir = tempDir('kmipcfg');
  const file = path.join(dir, 'dse.yaml');
  fs.writeFileSync(file, `system_key_directory: ${dir}\nkmip_hosts:\n${groups}`);
  return file;
}

const settings = (
  group: string,
  namespace?: string,
  cipher = 'AES/CBC/PKCS5Padding',
  strength = 256,
): EncryptionSettings => ({
  cipherAlgorithm: cipher,
  strength,
  keyProvider: 'KmipKeyProviderFactory',
  kmipHost: group,
  keyNamespace: namespace,
});

test(
  'key stores in JKS, PKCS12 (OpenSSL and keytool made, certificates-only trust stores too) ' +
    'and PEM all connect',
  async (t) => {
    const c = server.certs;
    const file = configFile(
      kmipYaml(server, 'jks') +
        kmipYaml(server, 'p12_openssl', {
          keystore_path: `${c}/client.p12`,
          keystore_type: 'PKCS12',
          truststore_path: `${c}/trust-openssl.pfx`,
          truststore_type: 'pkcs12',
        }) +
        kmipYaml(server, 'p12_keytool', {
          keystore_path: `${c}/client.p12`,
          keystore_type: 'pkcs12',
          truststore_path: `${c}/trust-keytool.pfx`,
          truststore_type: 'pkcs12',
        }) +
        kmipYaml(server, 'pem', {
          keystore_path: `${c}/client.crt`,
          keystore_type: 'pem',
          truststore_path: `${c}/ca.crt`,
          truststore_type: 'pem',
        }),
    );
    // PEM: certificate and key in one file.
    fs.writeFileSync(
      `${c}/client.crt`,
      fs.readFileSync(`${c}/client.crt`, 'utf8') + fs.readFileSync(`${c}/client.key`, 'utf8'),
    );
    const keys = new KeyProviders(readConfig(file));
    try {
      for (const g of ['jks', 'p12_openssl', 'p12_keytool', 'pem']) {
        const ids = await keys.kmipProvider.client(g).locate([]);
        t.true(Array.isArray(ids), g);
      }
    } finally {
      keys.close();
    }
  },
);

test('a wrong store password is reported with the file, never the password', async (t) => {
  const file = configFile(kmipYaml(server, 'g', { keystore_password: 'not-the-password' }));
  const keys = new KeyProviders(readConfig(file));
  try {
    const err = await t.throwsAsync(
      () => keys.keyFor(settings('g'), resolveCipher('AES/CBC/PKCS5Padding', 256)),
      { code: 'ERR_TDE_CONFIG' },
    );
    t.regex(
      err!.message,
      /cannot open kmip_hosts\.g\.keystore_path .*client\.jks as JKS: wrong password/,
    );
    t.false(err!.message.includes('not-the-password'));
  } finally {
    keys.close();
  }
});

test('kmip_hosts settings are validated with one message each', (t) => {
  const err = t.throws(
    () =>
      configFromObject({
        kmip_hosts: {
          g: {
            hosts: 'a:99999',
            keystore_path: '/nonexistent/ks.jks',
            timout: 5,
            key_cache_millis: -1,
          },
        },
      }),
    { code: 'ERR_TDE_CONFIG' },
  );
  t.regex(err!.message, /kmip_hosts\.g\.hosts: port 99999/);
  t.regex(err!.message, /kmip_hosts\.g\.keystore_path: file \/nonexistent\/ks\.jks does not exist/);
  t.regex(err!.message, /unknown setting "kmip_hosts\.g\.timout" \(did you mean "timeout"\?\)/);
  t.regex(err!.message, /key_cache_millis must be a whole number/);
});

test(
  'encrypting uses one key per group, namespace, algorithm and length, created when none ' +
    'exists',
  async (t) => {
    const keys = new KeyProviders(readConfig(configFile(kmipYaml(server, 'g'))));
    try {
      const aes256 = resolveCipher('AES/CBC/PKCS5Padding', 256);
      const a = await keys.keyFor(settings('g', 'ns-a'), aes256);
      const again = await keys.keyFor(
        settings('g', 'ns-a', 'AES/ECB/PKCS5Padding'),
        resolveCipher('AES/ECB/PKCS5Padding', 256),
      );
      const b = await keys.keyFor(settings('g', 'ns-b'), aes256);
      const c = await keys.keyFor(
        settings('g', 'ns-a', 'AES/CBC/PKCS5Padding', 128),
        resolveCipher('AES/CBC/PKCS5Padding', 128),
      );
      t.is(a.id, again.id, 'any mode of the same algorithm and length shares the key');
      t.not(a.id, b.id);
      t.not(a.id, c.id);
      t.regex(a.id, /^kmip:\/\/g\/\d+$/);
      t.is(a.bytes.length, 32);
      t.is(c.bytes.length, 16);

      // The server holds what was asked for.
      const client = keys.kmipProvider.client('g');
      const state = keyStateOf(
        a.record!.kmip_key_id,
        await client.getAttributes(a.record!.kmip_key_id),
      );
      t.is(state.state, 'Active');
      t.is(state.objectGroup, 'ns-a');

      // Steady state: no KMIP round trip for further SSTables.
      const before = client.requests;
      for (let i = 0; i < 20; i++) await keys.keyFor(settings('g', 'ns-a'), aes256);
      t.is(client.requests, before);
    } finally {
      keys.close();
    }
  },
);

test(
  'after the cache refresh a revoked key no ' + 'longer encrypts, but still decrypts by its id',
  async (t) => {
    let now = Date.now();
    const keys = new KeyProviders(
      readConfig(configFile(kmipYaml(server, 'g', { key_cache_millis: 60000 }))),
      { now: () => now },
    );
    try {
      const aes = resolveCipher('AES/CBC/PKCS5Padding', 256);
      const first = await keys.keyFor(settings('g', 'rotate'), aes);
      const id = first.record!.kmip_key_id;
      await keys.kmipProvider.client('g').revoke(id);

      t.is(
        (await keys.keyFor(settings('g', 'rotate'), aes)).id,
        first.id,
        'until the refresh, the cached choice stands',
      );
      now += 61000;
      const second = await keys.keyFor(settings('g', 'rotate'), aes);
      t.not(second.id, first.id);
      const old = await keys.keyFor({ ...settings('g', 'rotate'), kmipKeyId: id }, aes);
      t.true(old.bytes.equals(first.bytes));
    } finally {
      keys.close();
    }
  },
);

test(
  'keys past their Protect Stop Date or Deactivation Date, inactive, or in another namespace ' +
    'are not chosen',
  (t) => {
    const now = 1_800_000_000n;
    const attrs = (extra: Record<string, unknown>) =>
      keyStateOf('7', [
        { name: 'State', type: 'Enumeration', value: 'Active' },
        { name: 'InitialDate', type: 'DateTime', value: now - 100n },
        ...Object.entries(extra).map(([name, value]) => ({
          name,
          type: (typeof value === 'bigint' ? 'DateTime' : 'TextString') as 'DateTime',
          value: value as bigint,
        })),
      ]);
    t.true(usableForEncryption(attrs({}), now, undefined));
    t.false(usableForEncryption(attrs({ ProtectStopDate: now - 1n }), now, undefined));
    t.true(usableForEncryption(attrs({ ProtectStopDate: now + 1n }), now, undefined));
    t.false(usableForEncryption(attrs({ DeactivationDate: now }), now, undefined));
    t.false(usableForEncryption(attrs({ ObjectGroup: 'ns' }), now, undefined));
    t.true(usableForEncryption(attrs({ ObjectGroup: 'ns' }), now, 'ns'));
    t.false(usableForEncryption({ ...attrs({}), state: 'Deactivated' }, now, undefined));
    t.is(
      pickCurrentKey([
        { id: '3', initialDate: 5n },
        { id: '10', initialDate: 5n },
        { id: '4', initialDate: 4n },
      ])?.id,
      '10',
    );
  },
);

test(
  'a table rewritten with a KMIP key reads back, and a destroyed key is named with the ' +
    'SSTable that needs it',
  async (t) => {
    const file = configFile(kmipYaml(server, 'kmip1'));
    const dataDir = makeDataDir(
      (c) => c.table === 'legacy_oa_clust' || c.table === 'pk_types_snappy',
    );
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_oa_clust');
    const original = await readAll(onlySSTable(dir));
    const schema = path.join(path.dirname(file), 's.cql');
    fs.writeFileSync(
      schema,
      ['legacy_tables.legacy_oa_clust', 'test_ks.pk_types_snappy']
        .map(
          (tb) =>
            `ALTER TABLE ${tb} WITH compression = {'class': 'EncryptingLZ4Compressor', ` +
            `'key_provider': 'KmipKeyProviderFactory', 'kmip_host': 'kmip1', 'key_namespace': ` +
            `'prod', 'cipher_algorithm': 'AES/GCM/NoPadding', 'secret_key_strength': 256};`,
        )
        .join('\n'),
    );

    const up = await cli(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      schema,
      '--config',
      file,
    );
    t.is(up.code, 0, up.stdout + up.stderr);
    const files = onlySSTable(dir);
    const info = parseCompressionInfo(
      fs.readFileSync(componentPath(files, 'CompressionInfo.db')),
      'ci',
      true,
    );
    t.is(info.options.kmip_host, 'kmip1');
    t.regex(info.options.kmip_key_id, /^\d+$/);
    t.true((await readAll(files, readConfig(file))).equals(original));
    t.is((await cli('verify', '--data-dir', dataDir, '--config', file)).code, 0);

    // Destroy the key behind the tables' back.
    const keys = new KeyProviders(readConfig(file));
    await keys.kmipProvider.client('kmip1').revoke(info.options.kmip_key_id);
    await keys.kmipProvider.client('kmip1').destroy(info.options.kmip_key_id);
    keys.close();
    const v = await cli('verify', '--data-dir', dataDir, '--config', file, '--json');
    t.is(v.code, 1);
    const report = JSON.parse(v.stdout);
    for (const s of report.sstables) {
      t.is(s.faults[0].code, 'ERR_TDE_KEY_NOT_FOUND');
      t.regex(
        s.faults[0].message,
        new RegExp(
          `KMIP key ${info.options.kmip_key_id} of group kmip1 cannot be fetched \\(ItemNotFound`,
        ),
      );
      t.regex(s.faults[0].file, /Data\.db$/);
    }
  },
);

test(
  'system_info_encryption with KMIP uses only an existing matching key, and says how to make ' +
    'one',
  async (t) => {
    const file = configFile(kmipYaml(server, 'sys'));
    fs.appendFileSync(
      file,
      'system_info_encryption:\n  enabled: true\n  cipher_algorithm: AES/CBC/PKCS5Padding\n  ' +
        'secret_key_strength: 192\n  key_provider: KmipKeyProviderFactory\n  kmip_host: sys\n  ' +
        'key_namespace: sysinfo\n',
    );
    const config = readConfig(file);
    const keys = new KeyProviders(config);
    try {
      await t.throwsAsync(() => systemInfoKey(config, keys), {
        code: 'ERR_TDE_KEY_NOT_FOUND',
        message: new RegExp(
          /no active AES\/CBC\/PKCS5Padding 192-bit key in namespace sysinfo /.source +
            /.*createsystemkey AES\/CBC\/PKCS5Padding 192 -k sys -n sysinfo/.source,
        ),
      });
      await createKmipKey(
        keys.kmipProvider.client('sys'),
        resolveCipher('AES/CBC/PKCS5Padding', 192),
        { namespace: 'sysinfo' },
      );
    } finally {
      keys.close();
    }
    const fresh = new KeyProviders(config);
    try {
      const k = await systemInfoKey(config, fresh);
      t.regex(k.keyAlias, /^kmip:\/\/sys\/\d+$/);
      t.is(k.key.length, 24);
    } finally {
      fresh.close();
    }
  },
);
