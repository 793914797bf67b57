#!/usr/bin/env node
/**
 * KMIP key fetch against a local PyKMIP server (started here, on loopback, with the tests'
 * recipe test/kmip/server.sh, which needs Debian's python3-pykmip):
 *   - cache miss: Get and Get Attributes over the open TLS connection, as after key_cache_millis;
 *   - cache hit: the key from the provider's cache, as for every chunk batch in between;
 *   - cold: a new client, TLS handshake included, as at start-up.
 * Reported in fetches per second; the hit and the cold fetch are compared with the miss.
 *
 *   node bench/kmip.js [--quick] [--json FILE]
 */
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const tde = require('../dist');
const { main, round } = require('./lib/common');

const SCRIPT = path.join(__dirname, '..', 'test', 'kmip', 'server.sh');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function config(dir, port, cacheMillis) {
  const certs = path.join(dir, 'certs');
  return tde.configFromObject({
    system_key_directory: dir,
    kmip_hosts: {
      bench: {
        hosts: `127.0.0.1:${port}`,
        keystore_path: path.join(certs, 'client.p12'),
        keystore_type: 'PKCS12',
        keystore_password: 'storepass',
        truststore_path: path.join(certs, 'trust-openssl.pfx'),
        truststore_type: 'PKCS12',
        truststore_password: 'storepass',
        key_cache_millis: cacheMillis,
        timeout: 5000,
      },
    },
  });
}

async function rate(fn, seconds) {
  await fn();
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    await fn();
    n++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  return n / elapsed;
}

function kase(name, opsPerSecond, baseline) {
  return {
    suite: 'kmip',
    name,
    mbps: null,
    opsPerSecond: round(opsPerSecond, 1),
    baseline: baseline
      ? { name: baseline.name, opsPerSecond: round(baseline.opsPerSecond, 1) }
      : null,
    ratio: baseline ? round(opsPerSecond / baseline.opsPerSecond, 2) : null,
  };
}

async function run({ quick = false, log = () => {} } = {}) {
  const seconds = quick ? 1 : 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-bench-kmip-'));
  const port = await freePort();
  try {
    execFileSync(SCRIPT, ['install'], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync(SCRIPT, ['start', dir, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    log(
      `\n== KMIP: skipped, no PyKMIP server could start here (${
        String(err.stderr || err.message)
          .trim()
          .split('\n')[0]
      })\n`,
    );
    fs.rmSync(dir, { recursive: true, force: true });
    return [];
  }
  log('\n== KMIP key fetch from a local PyKMIP server (loopback, TLS)\n');
  const choice = tde.resolveCipher('AES/CBC/PKCS5Padding', 256);
  const settings = {
    cipherAlgorithm: choice.name,
    strength: 256,
    keyProvider: 'KmipKeyProviderFactory',
    kmipHost: 'bench',
  };
  const cases = [];
  try {
    // A key to fetch: the provider makes one (Locate finds none at first).
    const setup = new tde.KeyProviders(config(dir, port, 600000));
    const id = (await setup.keyFor(settings, choice)).record.kmip_key_id;
    setup.close();
    const byId = { ...settings, kmipKeyId: id };

    const uncached = new tde.KeyProviders(config(dir, port, 0));
    const miss = {
      name: 'KMIP key fetch, cache miss',
      opsPerSecond: await rate(() => uncached.keyFor(byId, choice), seconds),
    };
    uncached.close();
    const cached = new tde.KeyProviders(config(dir, port, 600000));
    const hit = await rate(() => cached.keyFor(byId, choice), quick ? 0.2 : 1);
    cached.close();
    const cold = await rate(async () => {
      const fresh = new tde.KeyProviders(config(dir, port, 0));
      await fresh.keyFor(byId, choice);
      fresh.close();
    }, seconds);

    cases.push(kase(miss.name, miss.opsPerSecond));
    cases.push(kase('KMIP key fetch, cache hit', hit, miss));
    cases.push(kase('KMIP key fetch, new connection (TLS handshake)', cold, miss));
    for (const c of cases) {
      log(
        `${c.name.padEnd(60)} ${c.opsPerSecond.toFixed(0).padStart(9)} /s` +
          (c.baseline ? `  ${c.ratio}x ${c.baseline.name}` : '') +
          '\n',
      );
    }
  } finally {
    execFileSync(SCRIPT, ['stop', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return cases;
}

module.exports = { run };
if (require.main === module) main({ run });
