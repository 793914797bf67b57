/**
 * Key administration and encrypted configuration, end to end against a real PyKMIP server: the
 * lifecycle the DSE guide walks through (create, use, expire, revoke, rewrite, destroy), and
 * config values encrypted with local and KMIP system keys.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { readConfig } from '../src/config/config';
import { loadConfig, watchConfig } from '../src/config/secure-values';
import { createKeyFile } from '../src/keys/key-file';
import { parseCompressionInfo } from '../src/sstable/compression-info';
import { componentPath } from '../src/sstable/descriptor';
import { cli, cliWithInput, makeDataDir, onlySSTable, readAll, tempDir } from './helpers';
import { KmipServer, kmipYaml, startKmipServer } from './kmip/helpers';

let server: KmipServer;
test.before(async () => {
  server = await startKmipServer();
});
test.after.always(() => server?.stop());

function setup(extra = '') {
  const dir = tempDir('admin');
  const config = path.join(dir, 'dse.yaml');
  fs.writeFileSync(
    config,
    `system_key_directory: ${dir}\n${extra}kmip_hosts:\n${kmipYaml(server, 'kmip1')}`,
  );
  return { dir, config };
}

const keyIdOf = (dir: string) => {
  const files = onlySSTable(dir);
  return parseCompressionInfo(
    fs.readFileSync(componentPath(files, 'CompressionInfo.db')),
    'ci',
    true,
  ).options.kmip_key_id;
};

test.serial(
  'lifecycle: create, encrypt, list, expire, revoke, rewrite with -a, destroy guarded by a backup',
  async (t) => {
    const { dir, config } = setup();
    const c = (...args: string[]) => cli(...args, '--config', config);

    // 1. A key made up front for the namespace is the one the tables use.
    const created = await c(
      'createsystemkey',
      'AES/CBC/PKCS5Padding',
      '256',
      '-k',
      'kmip1',
      '-n',
      'lifecycle',
    );
    t.is(created.code, 0, created.stderr);
    const k1 = /^kmip:\/\/kmip1\/(\d+)$/.exec(created.stdout.trim())![1];

    const dataDir = makeDataDir(
      (x) => x.table === 'legacy_nb_clust' || x.table === 'legacy_oa_clust',
    );
    const nb = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');
    const oa = path.join(dataDir, 'legacy_tables', 'legacy_oa_clust');
    const originals = [await readAll(onlySSTable(nb)), await readAll(onlySSTable(oa))];
    const alter = (table: string) =>
      `ALTER TABLE legacy_tables.${table} WITH compression = {'class': ` +
      `'EncryptingLZ4Compressor', ` +
      `'key_provider': 'KmipKeyProviderFactory', 'kmip_host': 'kmip1', 'key_namespace': ` +
      `'lifecycle', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', 'secret_key_strength': 256};\n`;
    const nbOnly = path.join(dir, 'nb.cql');
    const both = path.join(dir, 'both.cql');
    fs.writeFileSync(nbOnly, alter('legacy_nb_clust'));
    fs.writeFileSync(both, alter('legacy_nb_clust') + alter('legacy_oa_clust'));
    t.is(
      (
        await c(
          'upgradesstables',
          '--data-dir',
          dataDir,
          '--schema',
          nbOnly,
          'legacy_tables',
          'legacy_nb_clust',
        )
      ).code,
      0,
    );
    t.is(keyIdOf(nb), k1);

    const listed = JSON.parse((await c('managekmip', 'list', 'kmip1', '--json')).stdout);
    const row = listed.find((r: { id: string }) => r.id === k1);
    t.like(row, {
      state: 'Active',
      namespace: 'lifecycle',
      cipher: 'AES/CBC/PKCS5Padding',
      protectStopDate: null,
    });
    const text = (await c('managekmip', 'list', 'kmip1')).stdout;
    t.regex(
      text,
      /^ID +Name +Cipher +State +Activation Date +Creation Date +Protect Stop Date +Namespace/,
    );
    t.regex(
      text,
      new RegExp(
        `\\n${k1} .* Active +n/a +\\w{3} \\w{3} \\d\\d \\d\\d:\\d\\d:\\d\\d UTC \\d{4} +n/a ` +
          `+lifecycle`,
      ),
    );

    // A backup of the data as it is now, encrypted with k1.
    const backup = tempDir('backup');
    fs.cpSync(dataDir, backup, { recursive: true });

    // 2. Expire k1: the next table written gets a new key; the old SSTable still reads.
    const expired = await c('managekmip', 'expirekey', 'kmip1', k1);
    t.is(expired.code, 0, expired.stderr);
    t.regex(expired.stdout, /stops encrypting at .*still decrypts/);
    const afterExpiry = JSON.parse((await c('managekmip', 'list', 'kmip1', '--json')).stdout).find(
      (r: { id: string }) => r.id === k1,
    );
    t.truthy(afterExpiry.protectStopDate);
    t.is(
      (
        await c(
          'upgradesstables',
          '--data-dir',
          dataDir,
          '--schema',
          both,
          'legacy_tables',
          'legacy_oa_clust',
        )
      ).code,
      0,
    );
    const k2 = keyIdOf(oa);
    t.not(k2, k1);
    t.is(keyIdOf(nb), k1);
    t.is((await c('verify', '--data-dir', dataDir)).code, 0);

    // 3. Revoke k1 and rewrite everything with the key now in force.
    t.is((await c('managekmip', 'revoke', 'kmip1', k1)).code, 0);
    const rewrite = await c(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      both,
      '--include-all-sstables',
    );
    t.is(rewrite.code, 0, rewrite.stdout);
    t.is(keyIdOf(nb), k2);
    t.is(keyIdOf(oa), k2);
    t.is((await c('verify', '--data-dir', dataDir)).code, 0);

    // 4. Destroy: refused unchecked, refused where no SSTable is found (the keyspace directory
    // given for the data directory), refused while a snapshot or the backup still needs k1,
    // then forced.
    const unchecked = await c('managekmip', 'destroy', 'kmip1', k1);
    t.is(unchecked.code, 1);
    t.regex(unchecked.stderr, /ERR_TDE_KEY_IN_USE.*give --data-dir for each directory/);
    const tooDeep = path.join(dataDir, 'legacy_tables');
    const wrongDir = await c('managekmip', 'destroy', 'kmip1', k1, '--data-dir', tooDeep);
    t.is(wrongDir.code, 1);
    t.regex(
      wrongDir.stderr,
      /ERR_TDE_DATA_DIR.*found no SSTable under .*legacy_tables, so nothing/,
    );
    // A table behind a link that leads nowhere (a disk not mounted) may need the key.
    const gone = path.join(dataDir, 'legacy_tables', 'legacy_on_disk2');
    fs.symlinkSync('/nonexistent/disk2/legacy_on_disk2', gone);
    const unmounted = await c('managekmip', 'destroy', 'kmip1', k1, '--data-dir', dataDir);
    t.is(unmounted.code, 1);
    t.regex(unmounted.stderr, /could not be read .*legacy_on_disk2 \(a link that leads nowhere/s);
    fs.rmSync(gone);
    // Nor is the configuration's own config_encryption_key_name destroyed.
    const withConfigKey = path.join(dir, 'cfg-key.yaml');
    fs.writeFileSync(
      withConfigKey,
      // Spelt with a leading zero and a trailing space, which the server takes as the same key.
      fs.readFileSync(config, 'utf8') + `config_encryption_key_name: 'kmip://kmip1/0${k1} '\n`,
    );
    const named = await cli(
      'managekmip',
      'destroy',
      'kmip1',
      k1,
      '--data-dir',
      backup,
      '--config',
      withConfigKey,
    );
    t.is(named.code, 1);
    t.regex(named.stderr, /is config_encryption_key_name in .*cfg-key\.yaml/);
    const snapshot = path.join(nb, 'snapshots', 'before-rekey');
    fs.mkdirSync(snapshot, { recursive: true });
    const old = path.join(backup, 'legacy_tables', 'legacy_nb_clust');
    for (const f of fs.readdirSync(old)) fs.copyFileSync(path.join(old, f), path.join(snapshot, f));
    const snapped = await c('managekmip', 'destroy', 'kmip1', k1, '--data-dir', dataDir);
    t.is(snapped.code, 1);
    t.regex(snapped.stderr, /still needed by 1 SSTable\(s\) under .*snapshots\/before-rekey\//s);
    fs.rmSync(path.join(nb, 'snapshots'), { recursive: true });
    // Secondary-index SSTables (.<index> directories) are written under the table's key too.
    const index = path.join(nb, '.legacy_nb_clust_idx');
    fs.mkdirSync(index);
    for (const f of fs.readdirSync(old)) fs.copyFileSync(path.join(old, f), path.join(index, f));
    const indexed = await c('managekmip', 'destroy', 'kmip1', k1, '--data-dir', dataDir);
    t.is(indexed.code, 1);
    t.regex(indexed.stderr, /still needed by 1 SSTable\(s\) under .*\.legacy_nb_clust_idx\//s);
    fs.rmSync(index, { recursive: true });
    const refused = await c(
      'managekmip',
      'destroy',
      'kmip1',
      k1,
      '--data-dir',
      dataDir,
      '--data-dir',
      backup,
    );
    t.is(refused.code, 1);
    t.regex(
      refused.stderr,
      new RegExp(
        `ERR_TDE_KEY_IN_USE.*key ${k1} of kmip1 is still needed by 1 SSTable\\(s\\) under`,
      ),
    );
    t.regex(refused.stderr, /legacy_nb_clust\/nb-2-big-Data\.db/);
    t.is((await c('managekmip', 'destroy', 'kmip1', k1, '--data-dir', backup, '--force')).code, 0);

    const v = await c('verify', '--data-dir', backup, '--json');
    t.is(v.code, 1);
    const fault = JSON.parse(v.stdout).sstables.find((s: { sstable: string }) =>
      s.sstable.includes('legacy_nb_clust'),
    ).faults[0];
    t.is(fault.code, 'ERR_TDE_KEY_NOT_FOUND');
    t.regex(fault.message, new RegExp(`KMIP key ${k1} of group kmip1`));
    t.is((await c('verify', '--data-dir', dataDir)).code, 0);
    t.true((await readAll(onlySSTable(nb), readConfig(config))).equals(originals[0]));
  },
);

test('destroy refuses a key that is still active, and says how to proceed', async (t) => {
  const { config } = setup();
  const url = (
    await cli('createsystemkey', 'AES/ECB/PKCS5Padding', '128', '-k', 'kmip1', '--config', config)
  ).stdout.trim();
  const id = url.split('/').pop()!;
  const r = await cli('managekmip', 'destroy', 'kmip1', id, '--config', config);
  t.is(r.code, 1);
  t.regex(
    r.stderr,
    new RegExp(
      `key ${id} of kmip1 is Active, not revoked: revoke it first \\("sstable-tde managekmip ` +
        `revoke kmip1 ${id}"\\)`,
    ),
  );
});

test('managekmip errors: unknown group, unknown key, bad date', async (t) => {
  const { config } = setup();
  const g = await cli('managekmip', 'list', 'kmip2', '--config', config);
  t.is(g.code, 1);
  t.regex(
    g.stderr,
    /KMIP group "kmip2" is not defined in kmip_hosts .*did you mean "kmip1".*\(defined: kmip1\)/,
  );
  const k = await cli('managekmip', 'revoke', 'kmip1', '999999', '--config', config);
  t.regex(k.stderr, /ItemNotFound/);
  const d = await cli('managekmip', 'expirekey', 'kmip1', '1', 'next tuesday', '--config', config);
  t.regex(d.stderr, /"next tuesday" is not a date and time/);
});

test(
  "encryptconfigvalue with a local key: DSE's format, and loadConfig decrypts dse.yaml and " +
    'cassandra.yaml',
  async (t) => {
    const { dir, config } = setup();
    createKeyFile(dir, 'system_key', 'AES/ECB/PKCS5Padding', 128);
    const enc = (value: string) => {
      const r = cliWithInput(['encryptconfigvalue', '--config', config], value + '\n');
      if (r.code !== 0) throw new Error(r.stderr);
      t.regex(r.stderr, /Using system key system_key/);
      return /Your encrypted value is: (\S+)/.exec(r.stdout)![1];
    };
    const ldap = enc('s3cret-ldap');
    t.regex(
      ldap,
      /^[A-Za-z0-9+/]{22}==$/,
      'one ECB block, no IV: 24 base64 characters like the DSE example',
    );
    const ks = enc('keystore-pw');
    const ts = enc('truststore-pw');

    fs.appendFileSync(
      config,
      `config_encryption_active: true\nldap_options:\n  search_password: ${ldap}\n  ` +
        `truststore_password: ${enc('ldap-ts')}\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'cassandra.yaml'),
      `server_encryption_options:\n  keystore_password: ${ks}\n  truststore_password: ${ts}\n` +
        'client_encryption_options:\n  keystore_password: plain-text-password\n',
    );
    const err = await t.throwsAsync(() => loadConfig(config), { code: 'ERR_TDE_CONFIG' });
    t.regex(
      err!.message,
      new RegExp(
        /not encrypted with system_key.*\n  - .*cassandra\.yaml: /.source +
          /client_encryption_options\.keystore_password/.source,
      ),
    );
    t.false(err!.message.includes('plain-text-password'));

    fs.writeFileSync(
      path.join(dir, 'cassandra.yaml'),
      `server_encryption_options:\n  keystore_password: ${ks}\n  truststore_password: ${ts}\n`,
    );
    const loaded = await loadConfig(config);
    t.is((loaded.values.ldap_options as Record<string, string>).search_password, 's3cret-ldap');
    t.is(
      (loaded.cassandra!.server_encryption_options as Record<string, string>).truststore_password,
      'truststore-pw',
    );
    // The KMIP store passwords stay plain even with encryption active.
    t.is(loaded.kmipHosts.get('kmip1')!.keystorePassword, 'storepass');
  },
);

test(
  'encryptconfigvalue with a KMIP system key (kmip://GROUP/ID), as the DSE guide configures ' +
    'it',
  async (t) => {
    const { dir, config } = setup();
    const url = (
      await cli('createsystemkey', 'AES/CBC/PKCS5Padding', '128', '-k', 'kmip1', '--config', config)
    ).stdout.trim();
    fs.appendFileSync(config, `config_encryption_key_name: ${url}\n`);
    const r = cliWithInput(['encryptconfigvalue', '--config', config, '--json'], 'bind-password\n');
    t.is(r.code, 0, r.stderr);
    const { value, key } = JSON.parse(r.stdout);
    t.is(key, url);
    t.is(Buffer.from(value, 'base64').length, 16 + 16, 'CBC: a 16-byte IV, then one block');
    fs.appendFileSync(
      config,
      `config_encryption_active: true\nldap_options:\n  search_password: ${value}\n`,
    );
    const loaded = await loadConfig(config);
    t.is((loaded.values.ldap_options as Record<string, string>).search_password, 'bind-password');
    t.truthy(dir);

    // Revoked, the key encrypts no new value, and says what to do; the old value still reads.
    const id = url.split('/').pop()!;
    t.is((await cli('managekmip', 'revoke', 'kmip1', id, '--config', config)).code, 0);
    const refused = cliWithInput(['encryptconfigvalue', '--config', config], 'another\n');
    t.is(refused.code, 1);
    t.regex(
      refused.stderr,
      new RegExp(`ERR_TDE_KEY_REVOKED.*${url} is Deactivated, so it encrypts nothing new`),
    );
    t.regex(refused.stderr, /make a new key \("sstable-tde createsystemkey .* -k kmip1"\)/);
    const again = await loadConfig(config);
    t.is((again.values.ldap_options as Record<string, string>).search_password, 'bind-password');

    // Destroyed, the setting is named, and what is lost.
    t.is((await cli('managekmip', 'destroy', 'kmip1', id, '--force', '--config', config)).code, 0);
    const gone = await t.throwsAsync(() => loadConfig(config), { code: 'ERR_TDE_KEY_NOT_FOUND' });
    t.regex(gone!.message, new RegExp(`config_encryption_key_name ${url} cannot be fetched`));
  },
);

test('config changes are picked up without a restart', async (t) => {
  const { config } = setup();
  const seen: string[] = [];
  const watch = watchConfig(config, (c) => c && seen.push(c.systemKeyDirectory), 50);
  try {
    await new Promise((r) => setTimeout(r, 100));
    fs.writeFileSync(
      config,
      fs
        .readFileSync(config, 'utf8')
        .replace(/^system_key_directory: .*$/m, 'system_key_directory: /elsewhere'),
    );
    for (let i = 0; i < 40 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    t.deepEqual(seen, ['/elsewhere']);
  } finally {
    watch.close();
  }
});
