/** The KMIP client against a real PyKMIP server: operations, versions, failover, TLS faults. */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';

import test from 'ava';

import { KmipClient } from '../src/kmip/client';
import { KmipError } from '../src/kmip/messages';
import { freePort, groupFor, KmipServer, startKmipServer } from './kmip/helpers';

let server: KmipServer;
test.before(async () => {
  server = await startKmipServer();
});
test.after.always(() => server?.stop());

const pem = (name: string) => fs.readFileSync(path.join(server.certs, name), 'utf8');

for (const version of [undefined, { major: 1, minor: 2 }, { major: 1, minor: 0 }]) {
  const label = version ? `KMIP ${version.major}.${version.minor}` : 'the negotiated version';
  test.serial(
    `create, activate, get, locate, get attributes, revoke and destroy work at ${label}`,
    async (t) => {
      const client = new KmipClient(groupFor(server, { version }));
      try {
        const name = `test-key-${label}-${Date.now()}`;
        const id = await client.createSymmetricKey({
          algorithm: 'AES',
          length: 256,
          name,
          attributes: [{ name: 'ObjectGroup', type: 'TextString', value: `group-${label}` }],
        });
        t.deepEqual(client.version, version ?? { major: 2, minor: 0 });
        await client.activate(id);
        const key = await client.getKey(id);
        t.is(key.length, 32);

        t.deepEqual(
          await client.locate([
            { name: 'ObjectGroup', type: 'TextString', value: `group-${label}` },
          ]),
          [id],
        );
        t.true(
          (await client.locate([{ name: 'State', type: 'Enumeration', value: 'Active' }])).includes(
            id,
          ),
        );
        const attrs = await client.getAttributes(id);
        t.is(attrs.find((a) => a.name === 'State')?.value, 'Active');
        t.is(attrs.find((a) => a.name === 'CryptographicAlgorithm')?.value, 'AES');
        t.is(attrs.find((a) => a.name === 'CryptographicLength')?.value, 256);

        await client.revoke(id);
        t.false(
          (await client.locate([{ name: 'State', type: 'Enumeration', value: 'Active' }])).includes(
            id,
          ),
        );
        t.true((await client.getKey(id)).equals(key), 'a revoked key still decrypts');
        await client.destroy(id);
        const err = await t.throwsAsync(() => client.getKey(id));
        t.true(err instanceof KmipError);
        t.is((err as KmipError).reason, 'ItemNotFound');
        t.regex(
          err!.message,
          new RegExp(
            `KMIP Get \\(get key ${id}\\) failed: ItemNotFound \\("Could not locate object: ` +
              `${id}"\\)`,
          ),
        );
        t.true(client.requests > 0);
      } finally {
        client.close();
      }
    },
  );
}

test("Query lists the server's operations", async (t) => {
  const client = new KmipClient(groupFor(server));
  try {
    const payload = await client.query(['QueryOperations']);
    const ops = (payload.value as { tag: string; value: unknown }[])
      .filter((c) => c.tag === 'Operation')
      .map((c) => c.value);
    t.true(ops.includes('Create') && ops.includes('Locate') && ops.includes('Destroy'));
  } finally {
    client.close();
  }
});

test('a host that refuses connections is skipped for the next one listed', async (t) => {
  const closed = await freePort();
  const client = new KmipClient(groupFor(server, {}, [closed, server.port]));
  try {
    const id = await client.createSymmetricKey({ algorithm: 'AES', length: 128 });
    t.truthy(id);
    t.is(client.failovers, 1);
    t.is(client.host.port, server.port);
    // Later requests stay on the working host: no new failover.
    await client.activate(id);
    t.is(client.failovers, 1);
  } finally {
    client.close();
  }
});

test('a dropped connection is reopened once on the same host', async (t) => {
  const client = new KmipClient(groupFor(server));
  try {
    await client.createSymmetricKey({ algorithm: 'AES', length: 128 });
    (client as unknown as { connection: { close(): void } }).connection.close();
    await client.createSymmetricKey({ algorithm: 'AES', length: 128 });
    t.is(client.failovers, 0);
  } finally {
    client.close();
  }
});

test('when every host fails, one error lists each host with its cause', async (t) => {
  const [a, b] = [await freePort(), await freePort()];
  const client = new KmipClient(groupFor(server, {}, [a, b]));
  const err = await t.throwsAsync(
    () => client.createSymmetricKey({ algorithm: 'AES', length: 128 }),
    { code: 'ERR_TDE_KMIP_UNAVAILABLE' },
  );
  t.regex(
    err!.message,
    new RegExp(
      `no host of KMIP group test could create key AES-128:\\n  - 127\\.0\\.0\\.1:${a}: ` +
        `connection refused.*\\n  - 127\\.0\\.0\\.1:${b}: connection refused`,
    ),
  );
  client.close();
});

async function failureOf(
  t: any,
  overrides: Parameters<typeof groupFor>[1],
  ports?: number[],
): Promise<string> {
  const client = new KmipClient(groupFor(server, overrides, ports));
  try {
    const err = await t.throwsAsync(() => client.locate([]), { code: 'ERR_TDE_KMIP_UNAVAILABLE' });
    return err.message;
  } finally {
    client.close();
  }
}

test('once every host failed, requests fail at once for a while, then try again', async (t) => {
  const dead = await freePort();
  const client = new KmipClient(groupFor(server, {}, [dead]));
  const realNow = Date.now;
  try {
    const first = await t.throwsAsync(() => client.locate([]), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
    });
    t.regex(first!.message, new RegExp(`:\\n  - 127\\.0\\.0\\.1:${dead}: connection refused`));
    t.notRegex(first!.message, /every host failed/);
    // Within the hold-down: the same causes, without waiting on the hosts again.
    const held = await t.throwsAsync(() => client.getKey('1'), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
    });
    t.regex(
      held!.message,
      /could get key 1: every host failed \d+\.\d s ago, and they are tried again 5 s after that/,
    );
    t.regex(held!.message, new RegExp(`  - 127\\.0\\.0\\.1:${dead}: connection refused`));
    // After it, the hosts are tried again.
    Date.now = () => realNow() + 6000;
    const again = await t.throwsAsync(() => client.locate([]), {
      code: 'ERR_TDE_KMIP_UNAVAILABLE',
    });
    t.notRegex(again!.message, /every host failed/);
  } finally {
    Date.now = realNow;
    client.close();
  }
});

test('TLS faults each give their own message', async (t) => {
  const base = groupFor(server).tls;
  t.regex(
    await failureOf(t, { tls: { ca: base.ca } }),
    /requires a client certificate and none is configured/,
  );
  t.regex(
    await failureOf(t, { tls: { ...base, ca: [pem('other-ca.crt')] } }),
    /server certificate is not trusted.*truststore_path/,
  );
  t.regex(
    await failureOf(t, { tls: { ...base, cert: [pem('stranger.crt')], key: pem('stranger.key') } }),
    /server rejected the client certificate/,
  );
  t.regex(
    await failureOf(t, { tls: { ...base, protocol: 'TLSv1.3' } }),
    new RegExp(
      /share no TLS version or cipher suite: this client speaks only TLSv1.3 \(protocol /.source +
        /setting\).*TLSv1.2 only/.source,
    ),
  );
  t.regex(
    await failureOf(t, {
      tls: { ...base, protocol: 'TLSv1.2', ciphers: ['ECDHE-RSA-AES128-GCM-SHA256'] },
    }),
    new RegExp(
      /share no TLS version or cipher suite: .*offers only the cipher suites /.source +
        /ECDHE-RSA-AES128-GCM-SHA256 \(cipher_suites\)/.source,
    ),
  );
  t.regex(
    await failureOf(t, {
      tls: { ...base, cert: [pem('client-noeku.crt')], key: pem('client-noeku.key') },
    }),
    /not the client certificate for KMIP.*clientAuth/,
  );
});

/** A TLS server on loopback that behaves badly in the way `onSocket` says. */
async function badServer(
  onSocket: (s: tls.TLSSocket) => void,
): Promise<{ port: number; close(): void }> {
  const srv = tls.createServer({ cert: pem('server.crt'), key: pem('server.key') }, onSocket);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() };
}

test(
  'a server that closes the stream after 0 bytes ' + 'is blamed on trust, as the DSE guide says',
  async (t) => {
    const bad = await badServer((s) => s.destroy());
    try {
      t.regex(
        await failureOf(t, {}, [bad.port]),
        /closed the stream after 0 bytes: it most likely does not trust the client certificate/,
      );
    } finally {
      bad.close();
    }
  },
);

test('a server that never answers is given up on after the timeout setting', async (t) => {
  const sockets: tls.TLSSocket[] = [];
  const silent = await badServer((s) => sockets.push(s));
  const tcp = net.createServer(() => {});
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  try {
    t.regex(
      await failureOf(t, { timeoutMs: 300 }, [silent.port]),
      /no answer within 300 ms \(timeout setting\)/,
    );
    // TCP gets through there, but nothing speaks TLS: the handshake is what timed out.
    t.regex(
      await failureOf(t, { timeoutMs: 300 }, [(tcp.address() as net.AddressInfo).port]),
      /timed out after 300 ms in the TLS handshake: the port accepts connections but nothing/,
    );
  } finally {
    sockets.forEach((s) => s.destroy());
    silent.close();
    tcp.close();
  }
});

test('a port answering with something other than TLS is not called a version clash', async (t) => {
  const plain = net.createServer((s) => s.end('220 mail.example.com ESMTP ready\r\n'));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  try {
    const message = await failureOf(t, {}, [(plain.address() as net.AddressInfo).port]);
    t.regex(message, /the server did not answer with TLS \(what it sent is not a TLS record\)/);
    t.notRegex(message, /TLS version mismatch/);
  } finally {
    plain.close();
  }
});

test('a request that changes something is not sent again after it went unanswered', async (t) => {
  const sockets: tls.TLSSocket[] = [];
  const silent = await badServer((s) => sockets.push(s));
  const group = groupFor(server, { timeoutMs: 300, version: { major: 1, minor: 2 } }, [
    silent.port,
    server.port,
  ]);
  const client = new KmipClient(group);
  try {
    // The Create reached a host that never answered: it may have made the key, so it is not
    // made again on the next host.
    const err = await t.throwsAsync(
      () => client.createSymmetricKey({ algorithm: 'AES', length: 128 }),
      { code: 'ERR_TDE_KMIP_UNAVAILABLE' },
    );
    t.regex(err!.message, /no answer within 300 ms .*after the Create request .*was sent: whether/);
    t.regex(err!.message, /managekmip list test" before trying again/);
    // A request that only reads moves on to the next host as before.
    const fresh = new KmipClient(group);
    t.true(Array.isArray(await fresh.locate([])));
    fresh.close();
  } finally {
    client.close();
    sockets.forEach((s) => s.destroy());
    silent.close();
  }
});

test('a server that answers garbage is reported as not speaking KMIP', async (t) => {
  const bad = await badServer((s) =>
    s.on('data', () => s.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'))),
  );
  try {
    t.regex(
      await failureOf(t, {}, [bad.port]),
      /not a KMIP response \(first bytes 485454502f312e31\): is this port a KMIP server\?/,
    );
  } finally {
    bad.close();
  }
});

test(
  'Locate by name, and Add/Modify Attribute requests reach the server (PyKMIP refuses these ' +
    'dates, by name)',
  async (t) => {
    const client = new KmipClient(groupFor(server, { version: { major: 1, minor: 2 } }));
    try {
      const name = `named-${Date.now()}`;
      const id = await client.createSymmetricKey({ algorithm: 'AES', length: 128, name });
      t.deepEqual(
        await client.locate([
          {
            name: 'Name',
            type: 'Structure',
            value: [
              { tag: 'NameValue', type: 'TextString', value: name },
              { tag: 'NameType', type: 'Enumeration', value: 'UninterpretedTextString' },
            ],
          },
        ]),
        [id],
      );
      const psd = {
        name: 'ProtectStopDate',
        type: 'DateTime' as const,
        value: BigInt(Math.floor(Date.now() / 1000) + 3600),
      };
      // PyKMIP 0.10 stores neither date; what matters here is that its answer reaches the caller
      // intact.
      const modify = await t.throwsAsync(() => client.modifyAttribute(id, psd), {
        code: 'ERR_TDE_KMIP_OPERATION',
      });
      t.regex(
        modify!.message,
        new RegExp(
          /KMIP ModifyAttribute \(change ProtectStopDate of key \d+\) failed: /.source +
            /InvalidField \("The 'Protect Stop Date' attribute is not set/.source,
        ),
      );
    } finally {
      client.close();
    }
  },
);
