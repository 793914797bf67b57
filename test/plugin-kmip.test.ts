/**
 * The plugin against a real PyKMIP server: start-up connects to every group, KMIP metrics and
 * failover, the key-state poll stopping a revoked key at once, key rotation, and a process that
 * ends without close().
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import test from 'ava';

import { resolveCipher } from '../src/cipher/transformation';
import { readSegment } from '../src/commitlog/segment';
import { createKmipKey } from '../src/keys/kmip-admin';
import { KmipClient } from '../src/kmip/client';
import { openPlugin, TdePlugin } from '../src/index';
import type { KeyRevokedEvent, KeyRotatedEvent } from '../src/index';
import { ROOT, tempDir } from './helpers';
import { freePort, groupFor, KmipServer, kmipYaml, startKmipServer } from './kmip/helpers';

let server: KmipServer;
test.before(async () => {
  server = await startKmipServer();
});
test.after.always(() => server?.stop());

function configFile(groups: string): string {
  const dir = tempDir('plugin-kmip');
  const file = path.join(dir, 'dse.yaml');
  fs.writeFileSync(file, `system_key_directory: ${dir}\nkmip_hosts:\n${groups}`);
  return file;
}

/** A KMIP-keyed table's options; each test its own namespace, so their keys never meet. */
const table = (namespace: string) => ({
  class: 'EncryptingLZ4Compressor',
  cipher_algorithm: 'AES/CBC/PKCS5Padding',
  secret_key_strength: 256,
  key_provider: 'KmipKeyProviderFactory',
  kmip_host: 'g',
  key_namespace: namespace,
  chunk_length_kb: 4,
});

type Id = { dir: string; version: string; generation: string; format: 'big' };

async function flush(
  plugin: TdePlugin,
  options: Record<string, unknown>,
  data: Buffer,
): Promise<Id> {
  const dir = tempDir('plugin-kmip-data');
  const id: Id = { dir, version: 'nb', generation: '1', format: 'big' };
  const w = await plugin.createWriter(id, options);
  await w.write(data);
  await w.finish();
  return id;
}

async function readBack(plugin: TdePlugin, id: Id, length: number): Promise<Buffer> {
  const reader = await plugin.openReader(id);
  try {
    return await reader.read(0, length);
  } finally {
    await reader.close();
  }
}

test(
  'start-up fails when a configured KMIP group cannot be reached, naming the group, its ' +
    'hosts and why',
  async (t) => {
    const dead = await freePort();
    const file = configFile(kmipYaml(server, 'up') + kmipYaml(server, 'down', {}, [dead]));
    const err = await t.throwsAsync(() => openPlugin({ config: file }), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
    });
    t.regex(
      err!.message,
      /^cannot start: a KMIP group in kmip_hosts of .*dse\.yaml cannot be used/,
    );
    const down = `- group down \\(hosts 127\\.0\\.0\\.1:${dead}\\): .*connection refused`;
    t.regex(err!.message, new RegExp(down, 's'));
    t.false(err!.message.includes('group up'), 'the reachable group is not blamed');
    t.regex(err!.message, /Check that the KMIP servers are running/);
  },
);

test(
  'a group reachable through its second host starts; KMIP requests, latency and the ' +
    'failover are counted',
  async (t) => {
    const dead = await freePort();
    const config = configFile(kmipYaml(server, 'g', {}, [dead, server.port]));
    const plugin = await openPlugin({ config });
    try {
      let m = plugin.metrics();
      t.is(m.kmip.failovers, 1);
      t.is(m.kmip.errors, 0, 'a refused connection is not a request');

      const requests: string[] = [];
      plugin.on('kmipRequest', (e) => requests.push(`${e.operation}@${e.host}`));
      const data = Buffer.alloc(20000, 'k');
      const id = await flush(plugin, table('metrics'), data);
      t.true((await readBack(plugin, id, data.length)).equals(data));

      m = plugin.metrics();
      t.true(requests.length > 0);
      t.true(
        requests.every((r) => r.endsWith(`@127.0.0.1:${server.port}`)),
        requests.join(),
      );
      t.true(requests.includes(`Get@127.0.0.1:${server.port}`));
      t.is(m.kmip.latency.count, m.kmip.requests);
      t.is(
        Object.values(m.kmip.latency.buckets).reduce((a, b) => a + b, 0),
        m.kmip.requests,
      );
      t.true(m.kmip.latency.maxMs > 0 && m.kmip.latency.totalMs >= m.kmip.latency.maxMs);
      // The key was fetched once: the reader found it in the cache.
      t.is(m.keys.fetches, 1);
      t.true(m.keys.cacheHits >= 1);
      t.is(m.encrypted.chunks, 5);
      t.is(m.decrypted.chunks, 5);
    } finally {
      await plugin.close();
    }
  },
);

test(
  'a key revoked on the server stops encrypting at the next poll, long before the cache ' +
    'expires',
  async (t) => {
    // key_cache_millis is the default 5 minutes: only the poll can stop the key within the test.
    const config = configFile(kmipYaml(server, 'g'));
    const plugin = await openPlugin({ config, keyStatePollMillis: 100 });
    const admin = new KmipClient(groupFor(server));
    try {
      const options = table('revoke-stop');
      const data = Buffer.alloc(10000, 'r');
      const written = await flush(plugin, options, data);
      const compressor = await plugin.compressorFor(options);
      const key = compressor.keyId as string;
      t.regex(key, /^kmip:\/\/g\/\d+$/);

      const revoked = once(plugin, 'keyRevoked') as Promise<[KeyRevokedEvent]>;
      await admin.revoke(key.split('/').pop() as string);
      const [event] = await revoked;
      t.deepEqual(event, { key, state: 'Deactivated', action: 'stopped' });

      const err = await t.throwsAsync(() => compressor.compressBatch([Buffer.from('new data')]), {
        code: 'ERR_TDE_KEY_REVOKED',
      });
      t.true(err!.message.includes(key));
      t.is((err as { key?: string }).key, key);
      compressor.close();

      // What the key encrypted still reads; new data gets a new key, announced as a rotation.
      t.true((await readBack(plugin, written, data.length)).equals(data));
      const rotated = once(plugin, 'keyRotated') as Promise<[KeyRotatedEvent]>;
      const next = await plugin.compressorFor(options);
      t.not(next.keyId, key);
      const [rotation] = await rotated;
      t.is(rotation.previous, key);
      t.is(rotation.key, next.keyId as string);
      t.is((await next.compressBatch([Buffer.from('new data')])).length, 1);
      next.close();

      const m = plugin.metrics();
      t.is(m.keys.revoked, 1);
      t.is(m.keys.refusals, 1);
      t.is(m.keys.rotations, 1);
    } finally {
      admin.close();
      await plugin.close();
    }
  },
);

test(
  'with onKeyRevoked: warn, a revoked key is announced and keeps encrypting until its cache ' +
    'expires',
  async (t) => {
    const config = configFile(kmipYaml(server, 'g'));
    const plugin = await openPlugin({ config, keyStatePollMillis: 100, onKeyRevoked: 'warn' });
    const admin = new KmipClient(groupFor(server));
    try {
      const compressor = await plugin.compressorFor(table('revoke-warn'));
      const key = compressor.keyId as string;
      const revoked = once(plugin, 'keyRevoked') as Promise<[KeyRevokedEvent]>;
      await admin.revoke(key.split('/').pop() as string, 'KeyCompromise');
      const [event] = await revoked;
      t.deepEqual(event, { key, state: 'Compromised', action: 'warned' });
      t.is((await compressor.compressBatch([Buffer.from('still')])).length, 1);
      compressor.close();
      t.is(plugin.metrics().keys.refusals, 0);
    } finally {
      admin.close();
      await plugin.close();
    }
  },
);

test(
  'rotateKey on KMIP makes and activates a new key; new SSTables use it, old ones keep ' +
    'reading',
  async (t) => {
    const config = configFile(kmipYaml(server, 'g'));
    const plugin = await openPlugin({ config, keyStatePollMillis: 0 });
    try {
      const options = table('rotate');
      const old = Buffer.alloc(9000, 'o');
      const first = await flush(plugin, options, old);
      const before = await plugin.compressorFor(options);
      const rotated = once(plugin, 'keyRotated') as Promise<[KeyRotatedEvent]>;
      const r = await plugin.rotateKey(options);
      t.is(r.previous, before.keyId);
      t.not(r.key, before.keyId);
      t.deepEqual(r.tableOptions, options);
      const [event] = await rotated;
      t.deepEqual([event.source, event.previous, event.key], ['kmip', before.keyId, r.key]);
      before.close();

      const after = await plugin.compressorFor(options);
      t.is(after.keyId, r.key);
      after.close();
      t.true((await readBack(plugin, first, old.length)).equals(old));
    } finally {
      await plugin.close();
    }
  },
);

test(
  'a process that opens the plugin, polls and ' + 'never calls close() still exits on its own',
  async (t) => {
    const file = configFile(kmipYaml(server, 'g'));
    const script = `
    const { openPlugin } = require(${JSON.stringify(path.join(ROOT, 'src/index.ts'))});
    (async () => {
      const plugin = await openPlugin({ config: ${JSON.stringify(file)}, keyStatePollMillis: 20 });
      const c = await plugin.compressorFor(${JSON.stringify(table('alive'))});
      await c.compressBatch([Buffer.from('x')]);
      await plugin.checkKeyStates();
      console.log('opened, used, left open');
    })();
  `;
    // The timeout only ends a hang that would otherwise stall the suite; it is not the assertion.
    const { stdout } = await promisify(execFile)(process.execPath, ['--import=tsx', '-e', script], {
      timeout: 120000,
    });
    t.is(stdout.trim(), 'opened, used, left open');
  },
);

test(
  'a commit log segment whose KMIP key is revoked writes nothing more with it; its pending ' +
    'entries move to a new segment',
  async (t) => {
    const admin = new KmipClient(groupFor(server));
    // As in DSE, system_info_encryption never creates a key: the operator makes one first.
    const aes = resolveCipher('AES/CBC/PKCS5Padding', 128);
    const first = await createKmipKey(admin, aes, { namespace: 'commitlog' });
    const file = configFile(kmipYaml(server, 'g'));
    fs.appendFileSync(
      file,
      [
        'system_info_encryption:',
        '  enabled: true',
        '  cipher_algorithm: AES/CBC/PKCS5Padding',
        '  secret_key_strength: 128',
        '  key_provider: KmipKeyProviderFactory',
        '  kmip_host: g',
        '  key_namespace: commitlog',
        '',
      ].join('\n'),
    );
    const plugin = await openPlugin({ config: file, keyStatePollMillis: 100 });
    const dir = tempDir('plugin-kmip-commitlog');
    const resolve = async (alias: string) => admin.getKey(alias.split('/').pop() as string);
    try {
      const segment = await plugin.commitLogWriter(path.join(dir, 'CommitLog-7-1.log'), 1n);
      t.is(segment.keyAlias, `kmip://g/${first}`);
      segment.append(Buffer.from('synced before the revocation'));
      await segment.sync();
      segment.append(Buffer.from('appended after it'));

      const revoked = once(plugin, 'keyRevoked') as Promise<[KeyRevokedEvent]>;
      await admin.revoke(first);
      t.is((await revoked)[0].key, `kmip://g/${first}`);
      await t.throwsAsync(() => segment.sync(), { code: 'ERR_TDE_KEY_REVOKED' });
      const pending = segment.pendingEntries();
      t.deepEqual(pending.map(String), ['appended after it']);
      await t.throwsAsync(() => segment.close(), { code: 'ERR_TDE_KEY_REVOKED' });

      // No other active key: a new segment cannot start until the operator makes one.
      await t.throwsAsync(() => plugin.commitLogWriter(path.join(dir, 'CommitLog-7-2.log'), 2n), {
        code: 'ERR_TDE_KEY_NOT_FOUND',
        message: /createsystemkey AES\/CBC\/PKCS5Padding 128 -k g -n commitlog/,
      });
      const second = await createKmipKey(admin, aes, { namespace: 'commitlog' });
      const next = await plugin.commitLogWriter(path.join(dir, 'CommitLog-7-3.log'), 3n);
      t.is(next.keyAlias, `kmip://g/${second}`);
      for (const e of pending) next.append(e);
      await next.close();

      const entries = async (f: string) => {
        const out: string[] = [];
        await readSegment(path.join(dir, f), resolve, (e) => out.push(String(e)));
        return out;
      };
      t.deepEqual(await entries('CommitLog-7-1.log'), ['synced before the revocation']);
      t.deepEqual(await entries('CommitLog-7-3.log'), ['appended after it']);
      t.is(plugin.metrics().commitLog.entries, 2);
    } finally {
      admin.close();
      await plugin.close();
    }
  },
);

test('the storage-process example runs with keys from a KMIP group', async (t) => {
  const file = configFile(kmipYaml(server, 'g'));
  const example = path.join(ROOT, 'examples', 'storage-process.js');
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [example, '--dir', tempDir('example-kmip'), '--config', file, '--kmip', 'g'],
    { cwd: ROOT },
  );
  const lines = stdout.trim().split('\n');
  const rotation = lines.find((l) => l.startsWith("rotated the table's key: "));
  const m = /^rotated the table's key: (kmip:\/\/g\/\d+) -> (kmip:\/\/g\/\d+)$/.exec(
    rotation ?? '',
  );
  t.truthy(m, stdout);
  t.not(m![1], m![2]);
  t.true(lines[0].includes(`encrypted with ${m![1]})`));
  const second = `encrypted with ${m![2]})`;
  t.true(lines.some((l) => l.startsWith('flushed 2000 partitions') && l.includes(second)));
  t.true(lines.includes('the SSTable written before the rotation still reads with its own key'));
  t.true(lines.some((l) => /^ {2}kmip +[1-9]\d* requests, 0 unanswered, 0 failovers$/.test(l)));
});
