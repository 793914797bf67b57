/** A real PyKMIP server per test file, started by test/kmip/server.sh and killed afterwards. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { KmipGroup } from '../../src/kmip/client';
import { ROOT } from '../helpers';

const SCRIPT = path.join(ROOT, 'test', 'kmip', 'server.sh');

export interface KmipServer {
  dir: string;
  port: number;
  certs: string;
  /** The server's SQLite database (another server started with it serves the same keys). */
  database: string;
  /** Kills the server process at once (no shutdown), keeping its files. */
  kill(): void;
  /** Kills it and removes its directory. */
  stop(): void;
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startKmipServer(certsFrom?: string, database?: string): Promise<KmipServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-kmip-'));
  // Servers that share certificates let one client fail over between them.
  if (certsFrom) fs.cpSync(certsFrom, path.join(dir, 'certs'), { recursive: true });
  const port = await freePort();
  execFileSync(SCRIPT, ['start', dir, String(port), ...(database ? [database] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return {
    dir,
    port,
    certs: path.join(dir, 'certs'),
    database: database ?? path.join(dir, 'pykmip.db'),
    kill: () => {
      execFileSync(SCRIPT, ['stop', dir]);
    },
    stop: () => {
      execFileSync(SCRIPT, ['stop', dir]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const read = (f: string) => fs.readFileSync(f, 'utf8');

/** A client group for servers started here, with the PEM client certificate. */
export function groupFor(
  server: KmipServer,
  overrides: Partial<KmipGroup> = {},
  ports = [server.port],
): KmipGroup {
  return {
    name: 'test',
    hosts: ports.map((port) => ({ host: '127.0.0.1', port })),
    tls: {
      ca: [read(path.join(server.certs, 'ca.crt'))],
      cert: [read(path.join(server.certs, 'client.crt'))],
      key: read(path.join(server.certs, 'client.key')),
    },
    timeoutMs: 5000,
    keyCacheMillis: 300000,
    ...overrides,
  };
}

/** A dse.yaml kmip_hosts group section for the server (PEM stores unless told otherwise). */
export function kmipYaml(
  server: KmipServer,
  name: string,
  extra: Record<string, string | number> = {},
  ports = [server.port],
): string {
  const settings: Record<string, string | number> = {
    hosts: ports.map((p) => `127.0.0.1:${p}`).join(', '),
    keystore_path: path.join(server.certs, 'client.jks'),
    keystore_type: 'jks',
    keystore_password: 'storepass',
    truststore_path: path.join(server.certs, 'trust.jks'),
    truststore_type: 'jks',
    truststore_password: 'storepass',
    timeout: 5000,
    ...extra,
  };
  return (
    `  ${name}:\n` +
    Object.entries(settings)
      .map(([k, v]) => `    ${k}: ${v}`)
      .join('\n') +
    '\n'
  );
}
