/**
 * One TLS connection to one KMIP host, carrying one request at a time. KMIP frames each message
 * as a TTLV item: the reader takes the 8-byte header, checks that it announces a Response
 * Message of sane size, then waits for exactly that many bytes. A timeout, a malformed header or
 * a closed stream ends the connection with a TransportError whose `cause` says, in words a user
 * can act on, what went wrong.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

import { TdeError } from '../errors';

export interface HostAddress {
  host: string;
  port: number;
}

export function addressString(a: HostAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export interface TlsSettings {
  /** PEM certificates the server's certificate must chain to. */
  ca?: string[];
  /** Client certificate chain (PEM) and its private key (PEM), when the server wants one. */
  cert?: string[];
  key?: string;
  /** `TLSv1.2`, `TLSv1.3`, or a JSSE name such as `TLS` (= any supported). */
  protocol?: string;
  /** OpenSSL or IANA cipher suite names. */
  ciphers?: string[];
}

/** Responses larger than this are refused: no KMIP answer this package asks for comes close. */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const RESPONSE_MESSAGE_TAG = 0x42007b;

/** Why a connection or request failed, in words for the operator. */
export class TransportError extends TdeError {
  constructor(
    readonly address: HostAddress,
    readonly reason: string,
    /** False once a request may have reached the server (do not silently repeat it). */
    readonly beforeSend: boolean,
  ) {
    super('ERR_TDE_KMIP_UNAVAILABLE', `${addressString(address)}: ${reason}`);
  }
}

/** Maps Node's and OpenSSL's TLS error codes to an explanation and a remedy. */
export function explainTlsError(
  err: NodeJS.ErrnoException & { reason?: string },
  settings: TlsSettings,
): string {
  const hasClientCert = Boolean(settings.cert);
  const code = err.code ?? '';
  const text = `${code} ${err.message}`;
  if (code === 'ECONNREFUSED')
    return 'connection refused: is the KMIP server running and listening on this port?';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    return 'host name not found: check the hosts setting';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH')
    return 'host unreachable: check the network route to it';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'the server reset the connection';
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|RECORD_LAYER_FAILURE/i.test(text)) {
    // The first bytes back were not a TLS record at all: something other than TLS answered.
    return (
      'the server did not answer with TLS (what it sent is not a TLS record): is this port a ' +
      "KMIP server's TLS port rather than some other service?"
    );
  }
  if (
    /ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL/i.test(text) ||
    /VERSION_TOO_LOW|VERSION_TOO_HIGH|alert number 70/i.test(text)
  ) {
    return (
      'TLS version mismatch: client and server share no TLS version; check the protocol setting ' +
      '(many KMIP servers speak TLSv1.2 only)'
    );
  }
  if (/NO_SHARED_CIPHER|NO_CIPHERS_AVAILABLE|NO_CIPHER_MATCH/i.test(text)) {
    return 'TLS cipher mismatch: client and server share no cipher suite; check cipher_suites';
  }
  if (/HANDSHAKE_FAILURE|alert number 40/i.test(text)) {
    // The server's alert does not say which; name what this client restricted.
    const pinned = minMaxVersion(settings.protocol).minVersion;
    const limits = [
      pinned ? `this client speaks only ${pinned} (protocol setting)` : '',
      settings.ciphers
        ? `it offers only the cipher suites ${settings.ciphers.join(', ')} (cipher_suites)`
        : '',
    ]
      .filter(Boolean)
      .join(', and ');
    if (!hasClientCert) {
      return (
        'TLS handshake failure: the server most likely requires a client certificate and none is ' +
        'configured (keystore_path), or they share no TLS version or cipher suite' +
        (limits ? `; ${limits}` : '')
      );
    }
    return (
      'TLS handshake failure: client and server share no TLS version or cipher suite' +
      (limits ? `: ${limits}` : '; check protocol and cipher_suites') +
      (pinned && pinned !== 'TLSv1.2' ? ' (many KMIP servers speak TLSv1.2 only)' : '')
    );
  }
  if (
    /UNKNOWN_CA|alert number 48|BAD_CERTIFICATE|alert number 42|CERTIFICATE_UNKNOWN/i.test(text) ||
    /alert number 46|ACCESS_DENIED|alert number 49|CERTIFICATE_REQUIRED|alert number 116/i.test(
      text,
    )
  ) {
    return (
      'the server rejected the client certificate: make sure the server trusts the CA that ' +
      'signed the certificate in keystore_path'
    );
  }
  if (/CERT_HAS_EXPIRED/.test(code)) return 'the server certificate has expired';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return (
      `the server certificate is not valid for this host name (${err.reason ?? err.message}); ` +
      'list the host by a name its certificate carries'
    );
  }
  if (
    /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_UNTRUSTED/.test(code) ||
    /CERT_SIGNATURE_FAILURE|INVALID_CA|CERT_CHAIN_TOO_LONG/.test(code)
  ) {
    return (
      `the server certificate is not trusted (${code}): add the CA that signed it to ` +
      `truststore_path`
    );
  }
  return `${err.message}${code ? ` (${code})` : ''}`;
}

function minMaxVersion(
  protocol: string | undefined,
): Pick<tls.ConnectionOptions, 'minVersion' | 'maxVersion'> {
  if (!protocol) return {};
  const p = protocol.trim().toUpperCase().replace('_', '.');
  const exact: Record<string, tls.SecureVersion> = {
    'TLSV1.2': 'TLSv1.2',
    'TLSV1.3': 'TLSv1.3',
    'TLSV1.1': 'TLSv1.1',
    TLSV1: 'TLSv1',
  };
  if (exact[p]) return { minVersion: exact[p], maxVersion: exact[p] };
  return {}; // "TLS" and other JSSE family names: any version both sides support
}

export class KmipConnection {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private waiting: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: TransportError | undefined;
  private busy: Promise<unknown> = Promise.resolve();
  private bytesReceived = 0;

  private constructor(
    readonly address: HostAddress,
    private readonly socket: tls.TLSSocket,
    private readonly timeoutMs: number,
    settings: TlsSettings,
  ) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => this.fail(explainTlsError(err, settings)));
    socket.on('close', () =>
      this.fail(
        this.bytesReceived === 0
          ? 'the server closed the stream after 0 bytes: it most likely does not trust the ' +
              'client ' +
              'certificate (or the client certificate is missing); check keystore_path and the ' +
              "server's trust"
          : 'the server closed the connection',
      ),
    );
  }

  /** Opens and handshakes a connection, or fails with a TransportError naming the cause. */
  static connect(
    address: HostAddress,
    settings: TlsSettings,
    timeoutMs: number,
  ): Promise<KmipConnection> {
    return new Promise((resolve, reject) => {
      const options: tls.ConnectionOptions = {
        host: address.host,
        port: address.port,
        servername: net.isIP(address.host) ? undefined : address.host,
        ca: settings.ca,
        cert: settings.cert?.join('\n'),
        key: settings.key,
        ciphers: settings.ciphers?.join(':'),
        rejectUnauthorized: true,
        ...minMaxVersion(settings.protocol),
      };
      const socket = tls.connect(options);
      // Whether TCP got through: a timeout after it is a TLS handshake that never completed.
      let reached = false;
      socket.once('connect', () => (reached = true));
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new TransportError(
            address,
            reached
              ? `timed out after ${timeoutMs} ms in the TLS handshake: the port accepts ` +
                  'connections but nothing completed TLS there (is it a KMIP server, and not ' +
                  'overloaded?)'
              : `timed out after ${timeoutMs} ms connecting (is the host up, ` +
                  'and is the port open through any firewall?)',
            true,
          ),
        );
      }, timeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.removeAllListeners('close');
        // An idle connection must not keep the process alive; request() holds it while in use.
        socket.unref();
        resolve(new KmipConnection(address, socket, timeoutMs, settings));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new TransportError(address, explainTlsError(err, settings), true));
      });
      socket.once('close', () => {
        clearTimeout(timer);
        reject(
          new TransportError(
            address,
            'the server closed the connection during the TLS handshake',
            true,
          ),
        );
      });
    });
  }

  get closed(): boolean {
    return this.failure !== undefined;
  }

  private fail(reason: string): void {
    if (this.failure) return;
    this.failure = new TransportError(this.address, reason, false);
    this.socket.destroy();
    this.waiting?.reject(this.failure);
    this.waiting = undefined;
  }

  private onData(d: Buffer): void {
    this.bytesReceived += d.length;
    this.buffered.push(d);
    this.bufferedBytes += d.length;
    this.deliver();
  }

  /** Hands over one complete message if it has arrived; checks the header first. */
  private deliver(): void {
    if (!this.waiting || this.bufferedBytes < 8) return;
    const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered);
    this.buffered = [all];
    const tag = all.readUIntBE(0, 3);
    const length = all.readUInt32BE(4);
    if (tag !== RESPONSE_MESSAGE_TAG || all[3] !== 0x01) {
      this.fail(
        `the server sent something that is not a KMIP response (first bytes ` +
          `${all.subarray(0, 8).toString('hex')}): is this port a KMIP server?`,
      );
      return;
    }
    if (length > MAX_RESPONSE_BYTES) {
      this.fail(
        `the server announced a ${length}-byte response, more than the ` +
          `${MAX_RESPONSE_BYTES} accepted`,
      );
      return;
    }
    if (all.length < 8 + length) return;
    const message = all.subarray(0, 8 + length);
    const rest = all.subarray(8 + length);
    this.buffered = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    const w = this.waiting;
    this.waiting = undefined;
    w.resolve(Buffer.from(message));
  }

  /** Sends one request and resolves with the response's bytes. Requests are sent one at a time. */
  request(message: Buffer): Promise<Buffer> {
    const run = async () => {
      if (this.failure) throw new TransportError(this.address, this.failure.reason, true);
      const answer = new Promise<Buffer>((resolve, reject) => {
        this.waiting = { resolve, reject };
      });
      const timer = setTimeout(
        () => this.fail(`no answer within ${this.timeoutMs} ms (timeout setting)`),
        this.timeoutMs,
      );
      this.socket.ref();
      this.socket.write(message);
      this.deliver();
      try {
        return await answer;
      } finally {
        clearTimeout(timer);
        this.socket.unref();
      }
    };
    const result = this.busy.then(run, run);
    this.busy = result.catch(() => {});
    return result;
  }

  close(): void {
    if (this.failure) return;
    this.failure = new TransportError(this.address, 'the connection was closed', true);
    this.socket.end();
    this.socket.destroy();
  }
}
