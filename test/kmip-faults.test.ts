/**
 * KMIP faults against real PyKMIP servers: two servers sharing one key database (as replicas
 * would), one killed in the middle of a rewrite; every server down while keys are cached; a
 * server that accepts and never answers; servers that answer garbage; TLS that must not verify.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';

import test from 'ava';

import { resolveCipher } from '../src/cipher/transformation';
import { EncryptionSettings } from '../src/compression/options';
import { configFromObject, readConfig } from '../src/config/config';
import { KeyProviders } from '../src/keys/provider';
import { parseCompressionInfo } from '../src/sstable/compression-info';
import { componentPath, featuresOf } from '../src/sstable/descriptor';
import { cli, cliProcess, makeDataDir, onlySSTable, readAll, ROOT, tempDir } from './helpers';
import { freePort, KmipServer, kmipYaml, startKmipServer } from './kmip/helpers';

let primary: KmipServer;
test.before(async () => {
  primary = await startKmipServer();
});
test.after.always(() => primary?.stop());

/** A second server with the primary's certificates and key database: the same keys. */
const replica = () => startKmipServer(primary.certs, primary.database);

function configFile(groups: string): string {
  const dir = tempDir('kmipfault');
  const file = path.join(dir, 'dse.yaml');
  fs.writeFileSync(file, `system_key_directory: ${dir}\nkmip_hosts:\n${groups}`);
  return file;
}

/** Resolves once nothing accepts connections on `port` any more (a killed server is gone). */
async function refused(port: number): Promise<void> {
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (!open) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const settings = (group: string, namespace: string): EncryptionSettings => ({
  cipherAlgorithm: 'AES/CBC/PKCS5Padding',
  strength: 128,
  keyProvider: 'KmipKeyProviderFactory',
  kmipHost: group,
  keyNamespace: namespace,
});

test.serial(
  'a server killed in the middle of a rewrite: the next host takes over, the data reads back ' +
    'from it',
  async (t) => {
    const first = await replica();
    t.teardown(() => first.stop());
    const file = configFile(kmipYaml(primary, 'g', {}, [first.port, primary.port]));
    const tables = ['legacy_me_clust', 'legacy_nb_clust'];
    const dataDir = makeDataDir((c) => tables.includes(c.table));
    const originals = await Promise.all(
      tables.map((tb) => readAll(onlySSTable(path.join(dataDir, 'legacy_tables', tb)))),
    );
    // Each table has its own namespace, so each needs its own KMIP round trips.
    const schema = path.join(path.dirname(file), 's.cql');
    fs.writeFileSync(
      schema,
      tables
        .map(
          (tb) =>
            `ALTER TABLE legacy_tables.${tb} WITH compression = {'class': ` +
            "'EncryptingLZ4Compressor', 'key_provider': 'KmipKeyProviderFactory', " +
            `'kmip_host': 'g', 'key_namespace': '${tb}'};`,
        )
        .join('\n'),
    );

    // The run stops itself (SIGSTOP) as it starts the second table, after the first one got its key
    // from the first host; the first host is killed; the run goes on.
    const run = spawn(
      process.execPath,
      [
        '--import=tsx',
        path.join(ROOT, 'src/cli/run.ts'),
        'upgradesstables',
        '--data-dir',
        dataDir,
        '--schema',
        schema,
        '--config',
        file,
      ],
      {
        env: {
          ...process.env,
          NODE_OPTIONS: `--require=${path.join(ROOT, 'test', 'crash-hook.js')}`,
          SSTABLE_TDE_FS_ROOT: dataDir,
          SSTABLE_TDE_STOP_AT_MATCH: '^open-for-write .*legacy_nb_clust/sstable-tde-txn-',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    run.stdout.on('data', (d) => (output += d));
    run.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => run.on('exit', (code) => resolve(code)));
    t.teardown(() => run.kill('SIGKILL'));
    const state = () => {
      try {
        const stat = fs.readFileSync(`/proc/${run.pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      } catch {
        return 'gone';
      }
    };
    while (state() !== 'T') {
      if (state() === 'gone') return t.fail(`the run ended before it was stopped: ${output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // The first table's key came from the first host, which is now killed.
    t.regex(
      fs.readFileSync(path.join(first.dir, 'server.log'), 'utf8'),
      /Processing operation: (Locate|Create)/,
    );
    first.kill();
    await refused(first.port);
    process.kill(run.pid!, 'SIGCONT');
    t.is(await exited, 0, output);
    t.regex(output, /rewritten +legacy_tables\/legacy_nb_clust/);

    // Both tables read back through the configuration whose first host is down.
    const keys = readConfig(file);
    for (const [i, tb] of tables.entries()) {
      const files = onlySSTable(path.join(dataDir, 'legacy_tables', tb));
      const info = parseCompressionInfo(
        fs.readFileSync(componentPath(files, 'CompressionInfo.db')),
        'ci',
        featuresOf(files).hasMaxCompressedLength,
      );
      t.regex(info.options.kmip_key_id, /^\d+$/);
      t.true((await readAll(files, keys)).equals(originals[i]), tb);
    }
    const verify = await cli('verify', '--data-dir', dataDir, '--config', file);
    t.is(verify.code, 0, verify.stdout + verify.stderr);

    // With no host up, verify says the SSTables were not checked, not that they are damaged.
    const downFile = configFile(kmipYaml(primary, 'g', { timeout: 400 }, [first.port]));
    const down = await cli('verify', '--data-dir', dataDir, '--config', downFile);
    t.is(down.code, 1);
    t.regex(
      down.stdout,
      /2 SSTables verified, 2 faults \(2 SSTables not checked: no KMIP server could be reached/,
    );
  },
);

test.serial(
  'every host down: cached keys keep working until key_cache_millis runs out, then an error ' +
    'names each host',
  async (t) => {
    const a = await replica();
    const b = await replica();
    t.teardown(() => {
      a.stop();
      b.stop();
    });
    let now = Date.now();
    const config = readConfig(
      configFile(kmipYaml(primary, 'g', { key_cache_millis: 60000 }, [a.port, b.port])),
    );
    const keys = new KeyProviders(config, { now: () => now });
    t.teardown(() => keys.close());
    const aes = resolveCipher('AES/CBC/PKCS5Padding', 128);

    const chosen = await keys.keyFor(settings('g', 'cache'), aes);
    const id = chosen.record!.kmip_key_id;
    const byId = await keys.keyFor({ ...settings('g', 'cache'), kmipKeyId: id }, aes);
    t.true(byId.bytes.equals(chosen.bytes));

    a.kill();
    b.kill();
    await refused(a.port);
    await refused(b.port);
    now += 59000;
    // Within the cache: the choice and the key bytes need no server.
    const cachedChoice = await keys.keyFor(settings('g', 'cache'), aes);
    t.is(cachedChoice.id, chosen.id);
    t.true(cachedChoice.bytes.equals(chosen.bytes));
    t.true(
      (await keys.keyFor({ ...settings('g', 'cache'), kmipKeyId: id }, aes)).bytes.equals(
        chosen.bytes,
      ),
    );

    now += 2000;
    const expected = new RegExp(
      `no host of KMIP group g could .*:\\n  - 127\\.0\\.0\\.1:${a.port}: connection refused.*\\n` +
        `  - 127\\.0\\.0\\.1:${b.port}: connection refused`,
    );
    await t.throwsAsync(() => keys.keyFor(settings('g', 'cache'), aes), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
      message: expected,
    });
    await t.throwsAsync(() => keys.keyFor({ ...settings('g', 'cache'), kmipKeyId: id }, aes), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
      message: new RegExp(`could get key ${id}:`),
    });
  },
);

/** A TLS server with the test PKI's server certificate that behaves as `onSocket` says. */
async function tlsServer(
  onSocket: (s: tls.TLSSocket) => void,
  host = '127.0.0.1',
  cert = 'server',
) {
  const pem = (n: string) => fs.readFileSync(path.join(primary.certs, n));
  const srv = tls.createServer({ cert: pem(`${cert}.crt`), key: pem(`${cert}.key`) }, onSocket);
  await new Promise<void>((r) => srv.listen(0, host, r));
  const sockets = new Set<net.Socket>();
  srv.on('secureConnection', (s) => sockets.add(s));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      srv.close();
    },
  };
}

/** `managekmip list g` through a dse.yaml naming these hosts; its exit code and output. */
async function listVia(hosts: string, extra: Record<string, string | number> = {}) {
  const file = configFile(kmipYaml(primary, 'g', extra).replace(/hosts: .*/, `hosts: ${hosts}`));
  const r = await cli('managekmip', 'list', 'g', '--config', file);
  return { code: r.code, output: r.stdout + r.stderr };
}

test(
  'a server that accepts and never answers: the timeout setting is honoured and the host ' +
    'named',
  async (t) => {
    const silentTls = await tlsServer(() => {});
    const silentTcp = net.createServer(() => {});
    await new Promise<void>((r) => silentTcp.listen(0, '127.0.0.1', r));
    const tcpPort = (silentTcp.address() as net.AddressInfo).port;
    t.teardown(() => {
      silentTls.close();
      silentTcp.close();
    });

    const a = await listVia(`127.0.0.1:${silentTls.port}`, { timeout: 400 });
    t.is(a.code, 1);
    t.regex(
      a.output,
      new RegExp(
        `ERR_TDE_KMIP_UNAVAILABLE.*\\n  - 127\\.0\\.0\\.1:${silentTls.port}: ` +
          'no answer within 400 ms \\(timeout setting\\)',
      ),
    );
    const b = await listVia(`127.0.0.1:${tcpPort}`, { timeout: 400 });
    t.regex(
      b.output,
      new RegExp(`  - 127\\.0\\.0\\.1:${tcpPort}: timed out after 400 ms in the TLS handshake`),
    );
    // With a working host after the silent one, the request succeeds there.
    const c = await listVia(`127.0.0.1:${silentTls.port}, 127.0.0.1:${primary.port}`, {
      timeout: 400,
    });
    t.is(c.code, 0, c.output);
  },
);

test(
  'servers that answer garbage: not a KMIP response, an endless stream, a huge announced ' +
    'length, a damaged message',
  async (t) => {
    const cases: [string, (s: tls.TLSSocket) => void, RegExp][] = [
      [
        'HTTP',
        (s) => s.on('data', () => s.write('HTTP/1.1 400 Bad Request\r\n\r\n')),
        /not a KMIP response \(first bytes 485454502f312e31\)/,
      ],
      [
        'endless zeros',
        (s) =>
          s.on('data', () => {
            const z = Buffer.alloc(65536);
            const pump = () => {
              while (s.write(z));
            };
            s.on('drain', pump);
            pump();
          }),
        /not a KMIP response \(first bytes 0000000000000000\)/,
      ],
      [
        '4 GiB announced',
        (s) => s.on('data', () => s.write(Buffer.from('42007b01ffffffff', 'hex'))),
        /announced a 4294967295-byte response, more than the 16777216 accepted/,
      ],
      [
        'damaged message',
        (s) =>
          s.on('data', () =>
            s.write(
              Buffer.from('42007b0100000010' + '4200770100000008' + '42006a0200000004', 'hex'),
            ),
          ),
        new RegExp(
          'ERR_TDE_KMIP_UNAVAILABLE\\]: no host .*\\n  - 127\\.0\\.0\\.1:\\d+ sent an ' +
            'answer that is not a valid KMIP response \\(malformed KMIP message at byte 20',
        ),
      ],
    ];
    for (const [name, behave, expected] of cases) {
      const server = await tlsServer(behave);
      try {
        const r = await listVia(`127.0.0.1:${server.port}`, { timeout: 2000 });
        t.is(r.code, 1, name);
        t.regex(r.output, expected, name);
        t.notRegex(r.output, /ERR_TDE_INTERNAL|\n +at /, name);
        // Each is a broken host: the real server listed after it answers instead.
        const next = await listVia(`127.0.0.1:${server.port}, 127.0.0.1:${primary.port}`, {
          timeout: 2000,
        });
        t.is(next.code, 0, `${name}: ${next.output}`);
      } finally {
        server.close();
      }
    }
  },
);

test(
  'TLS is never relaxed: another CA, the wrong host name, no trust store, or ' +
    'NODE_TLS_REJECT_UNAUTHORIZED=0',
  async (t) => {
    // The server's certificate names 127.0.0.1 and localhost; 127.0.0.2 reaches the same machine.
    const other = await tlsServer(() => {}, '127.0.0.2');
    t.teardown(() => other.close());
    const wrongName = await listVia(`127.0.0.2:${other.port}`);
    t.regex(
      wrongName.output,
      new RegExp(
        '127\\.0\\.0\\.2:\\d+: the server certificate is not valid for this host name ' +
          '.*list the host by a name its certificate carries',
      ),
    );

    const otherCa = await listVia(`127.0.0.1:${primary.port}`, {
      truststore_path: path.join(primary.certs, 'other-ca.crt'),
      truststore_type: 'pem',
    });
    t.regex(
      otherCa.output,
      /server certificate is not trusted \(\w+\): add the CA that signed it to truststore_path/,
    );

    // No trust store: Node's own CA list, which does not hold the test CA.
    const file = configFile(
      kmipYaml(primary, 'g').replace(/ +truststore_(path|type|password): .*\n/g, ''),
    );
    const none = await cli('managekmip', 'list', 'g', '--config', file);
    t.is(none.code, 1);
    t.regex(none.stderr, /server certificate is not trusted/);

    // The environment variable that turns verification off for Node programs changes nothing here.
    const env = await cliProcess(['managekmip', 'list', 'g', '--config', file], {
      NODE_TLS_REJECT_UNAUTHORIZED: '0',
    });
    t.is(env.code, 1);
    t.regex(env.stderr, /server certificate is not trusted/);

    // And no setting switches it off: such names are unknown settings, not silently accepted.
    for (const setting of [
      'verify',
      'insecure',
      'ssl_verify',
      'reject_unauthorized',
      'verify_server_certificate',
    ]) {
      const err = t.throws(
        () => configFromObject({ kmip_hosts: { g: { hosts: 'h', [setting]: false } } }),
        { code: 'ERR_TDE_CONFIG' },
      );
      t.regex(err!.message, new RegExp(`unknown setting "kmip_hosts\\.g\\.${setting}"`));
    }
  },
);
