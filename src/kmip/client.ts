/**
 * A KMIP client for one `kmip_hosts` group: host failover, one persistent connection to the host
 * in use, protocol version negotiation, and typed operations.
 *
 * Hosts are tried in the order listed. The client stays on a host while it works; when a request
 * fails for a transport reason it reopens the connection once, then moves on to the next host.
 * If every host fails, one error lists each host with its cause. A KMIP failure result is the
 * server's answer, not a transport problem, and is raised at once as a KmipError.
 */
import { isTdeError, TdeError } from '../errors';
import {
  Attribute,
  BatchRequest,
  child,
  children,
  expectSuccess,
  KmipError,
  nameAttribute,
  parseResponse,
  ProtocolVersion,
  readAttributes,
  requestMessage,
  requests,
  versionString,
} from './messages';
import { decode, encode, TtlvItem } from './ttlv/codec';
import {
  addressString,
  HostAddress,
  KmipConnection,
  TlsSettings,
  TransportError,
} from './transport';
import type { TdeObserver } from '../metrics/observer';

/**
 * After every host of a group failed, requests in the next this many ms fail at once with the
 * same causes instead of each waiting out every host's timeout again: a rewrite of thousands of
 * SSTables against a dead server then takes seconds, not hours. The first request after it
 * tries the hosts again.
 */
export const HOLD_DOWN_MS = 5000;

/** Operations that change nothing on the server, so asking another host again is harmless. */
const READ_ONLY = new Set(['DiscoverVersions', 'Query', 'Get', 'GetAttributes', 'Locate']);

export interface KmipGroup {
  /** The group's name in kmip_hosts. */
  name: string;
  hosts: HostAddress[];
  tls: TlsSettings;
  /** Socket timeout in milliseconds (connect, and each request's answer). */
  timeoutMs: number;
  /** How often cached key choices are refreshed. */
  keyCacheMillis: number;
  /** Use this KMIP version instead of negotiating one. */
  version?: ProtocolVersion;
}

/** Versions offered in Discover Versions, most preferred first. */
export const SUPPORTED_VERSIONS: ProtocolVersion[] = [
  { major: 2, minor: 0 },
  { major: 1, minor: 4 },
  { major: 1, minor: 3 },
  { major: 1, minor: 2 },
  { major: 1, minor: 1 },
  { major: 1, minor: 0 },
];

/** KMIP's Cryptographic Usage Mask bits for keys that encrypt and decrypt. */
export const USAGE_ENCRYPT_DECRYPT = 0x04 | 0x08;

export interface CreateKeyOptions {
  /** KMIP Cryptographic Algorithm name, e.g. `AES`, `TripleDES`, `Blowfish`. */
  algorithm: string;
  length: number;
  name?: string;
  usageMask?: number;
  /** Extra attributes (Object Group, ...). */
  attributes?: Attribute[];
  /** KMIP 1.x: a server-side Template whose attributes the key takes. */
  template?: string;
}

export class KmipClient {
  private connection: KmipConnection | undefined;
  private current = 0;
  private negotiated: ProtocolVersion | undefined;
  private closed = false;

  /** @param observer told of every round trip (with its latency) and every failover. */
  constructor(
    readonly group: KmipGroup,
    private readonly observer?: TdeObserver,
  ) {
    if (group.hosts.length === 0) {
      throw new TdeError('ERR_TDE_CONFIG', `KMIP group ${group.name} lists no hosts`);
    }
  }

  /** The protocol version in use (after the first request). */
  get version(): ProtocolVersion | undefined {
    return this.negotiated;
  }

  get host(): HostAddress {
    return this.group.hosts[this.current];
  }

  /** Failovers so far: each time a request moved on from a failing host. */
  failovers = 0;
  /** When every host last failed, and until when requests fail at once (see HOLD_DOWN_MS). */
  private down: { at: number; until: number; causes: string[] } | undefined;
  /** Requests sent so far (each a round trip to a server). */
  requests = 0;

  private async open(index: number): Promise<KmipConnection> {
    if (this.connection && !this.connection.closed && index === this.current)
      return this.connection;
    this.connection?.close();
    this.connection = undefined;
    const c = await KmipConnection.connect(
      this.group.hosts[index],
      this.group.tls,
      this.group.timeoutMs,
    );
    this.connection = c;
    this.current = index;
    if (!this.negotiated) this.negotiated = this.group.version ?? (await this.negotiate(c));
    return c;
  }

  private async exchange(c: KmipConnection, version: ProtocolVersion, batch: BatchRequest) {
    this.requests++;
    const started = performance.now();
    let ok = false;
    try {
      const bytes = await c.request(encode(requestMessage(version, [batch])));
      ok = true;
      try {
        return parseResponse(decode(bytes));
      } catch (err) {
        // A framed answer that does not decode: say which server sent it. (Not retried
        // elsewhere: the request reached a server, which may have carried it out.)
        if (!isTdeError(err)) throw err;
        throw new TdeError(
          err.code,
          `${addressString(c.address)} sent an answer that is not a ` +
            `valid KMIP response (${err.message}): is it a KMIP server, and does it speak KMIP ` +
            `${versionString(version)}?`,
          {},
          err,
        );
      }
    } finally {
      this.observer?.kmipRequest?.({
        group: this.group.name,
        host: addressString(this.host),
        operation: batch.operation,
        ms: performance.now() - started,
        ok,
      });
    }
  }

  /** Asks the server which versions it speaks (Discover Versions, KMIP 1.1 and later). */
  private async negotiate(c: KmipConnection): Promise<ProtocolVersion> {
    const response = await this.exchange(
      c,
      { major: 1, minor: 1 },
      requests.discoverVersions(SUPPORTED_VERSIONS),
    );
    const item = response.batch[0];
    if (!item || item.status !== 'Success') {
      // A KMIP 1.0 server has no Discover Versions.
      return { major: 1, minor: 0 };
    }
    const offered = children(item.payload, 'ProtocolVersion').map((pv) => ({
      major: Number(child(pv, 'ProtocolVersionMajor')?.value),
      minor: Number(child(pv, 'ProtocolVersionMinor')?.value),
    }));
    const common = SUPPORTED_VERSIONS.find((v) =>
      offered.some((o) => o.major === v.major && o.minor === v.minor),
    );
    if (!common) {
      throw new TdeError(
        'ERR_TDE_KMIP_UNAVAILABLE',
        `KMIP group ${this.group.name}: the server speaks KMIP ` +
          `${offered.map(versionString).join(', ') || '(no version)'}, none of which this client ` +
          `speaks (${SUPPORTED_VERSIONS.map(versionString).join(', ')})`,
      );
    }
    return common;
  }

  /**
   * Sends one operation, failing over between hosts. `build` makes the request for the version
   * in use; `what` describes the operation for error messages.
   */
  async call(build: (v: ProtocolVersion) => BatchRequest, what: string): Promise<TtlvItem> {
    if (this.closed)
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `KMIP client for ${this.group.name} is closed`,
      );
    if (this.down && Date.now() < this.down.until) {
      const ago = ((Date.now() - this.down.at) / 1000).toFixed(1);
      throw new TdeError(
        'ERR_TDE_KMIP_UNAVAILABLE',
        `no host of KMIP group ${this.group.name} could ${what || 'answer'}: every host failed ` +
          `${ago} s ago, and they are tried again ${HOLD_DOWN_MS / 1000} s after that:\n` +
          this.down.causes.map((c) => `  - ${c}`).join('\n'),
      );
    }
    const causes: string[] = [];
    const n = this.group.hosts.length;
    const first = this.current;
    for (let step = 0; step < n; step++) {
      const index = (this.current + step) % n;
      for (let attempt = 0; attempt < 2; attempt++) {
        // A connection that was already open may have been dropped since: it is reopened once.
        // A host that cannot be reached afresh is left for the next one.
        const fresh = !(this.connection && !this.connection.closed && this.current === index);
        let sent: string | undefined;
        try {
          const c = await this.open(index);
          const version = this.negotiated as ProtocolVersion;
          const batch = build(version);
          sent = batch.operation;
          const response = await this.exchange(c, version, batch);
          if (step > 0) {
            this.failovers++;
            this.observer?.kmipFailover?.({
              group: this.group.name,
              from: addressString(this.group.hosts[first]),
              to: addressString(this.group.hosts[index]),
              causes: [...causes],
            });
          }
          this.down = undefined;
          return expectSuccess(response, batch.operation, what ? `(${what}) ` : '');
        } catch (err) {
          if (err instanceof KmipError && err.reason === 'AuthenticationNotSuccessful') {
            throw new TdeError(
              'ERR_TDE_KMIP_UNAVAILABLE',
              `${addressString(this.group.hosts[index])}: the ` +
                'server accepted the TLS connection but not the client certificate for KMIP ("' +
                `${err.resultMessage ?? 'Authentication Not Successful'}"): many servers need ` +
                `the certificate ` +
                'to carry extendedKeyUsage clientAuth and to be registered with them',
              {},
              err,
            );
          }
          // An answer that is not KMIP is the host's fault: the next one is tried when nothing
          // can have been changed by asking again (the version handshake, or an operation that
          // only reads). After a Create or a Revoke it is not: the first host may have done it.
          if (isTdeError(err, 'ERR_TDE_TTLV') && (sent === undefined || READ_ONLY.has(sent))) {
            this.connection?.close();
            this.connection = undefined;
            causes.push(err.message);
            break;
          }
          if (!(err instanceof TransportError)) throw err;
          this.connection?.close();
          this.connection = undefined;
          // A request that changes something and may have reached the server is not sent again,
          // here or to another host: it may have been carried out (a second Create would make
          // a second key, a second Activate fail on a key that is active).
          if (!err.beforeSend && sent !== undefined && !READ_ONLY.has(sent)) {
            throw new TdeError(
              'ERR_TDE_KMIP_UNAVAILABLE',
              `${addressString(this.group.hosts[index])}: ${err.reason}, after the ${sent} ` +
                `request${what ? ` (${what})` : ''} was sent: whether the server carried it ` +
                'out is unknown, so it is not sent again. Check with "sstable-tde managekmip ' +
                `list ${this.group.name}" before trying again`,
              {},
              err,
            );
          }
          if (fresh || attempt === 1) {
            causes.push(`${addressString(this.group.hosts[index])}: ${err.reason}`);
            break;
          }
        }
      }
    }
    const at = Date.now();
    this.down = { at, until: at + HOLD_DOWN_MS, causes };
    throw new TdeError(
      'ERR_TDE_KMIP_UNAVAILABLE',
      `no host of KMIP group ${this.group.name} could ${what || 'answer'}:\n` +
        causes.map((c) => `  - ${c}`).join('\n'),
    );
  }

  async createSymmetricKey(options: CreateKeyOptions): Promise<string> {
    const attrs: Attribute[] = [
      { name: 'CryptographicAlgorithm', type: 'Enumeration', value: options.algorithm },
      { name: 'CryptographicLength', type: 'Integer', value: options.length },
      {
        name: 'CryptographicUsageMask',
        type: 'Integer',
        value: options.usageMask ?? USAGE_ENCRYPT_DECRYPT,
      },
      ...(options.name ? [nameAttribute(options.name)] : []),
      ...(options.attributes ?? []),
    ];
    const payload = await this.call(
      (v) => requests.createSymmetricKey(v, attrs, options.template),
      `create key ${options.algorithm}-${options.length}`,
    );
    return uniqueIdentifier(payload, 'Create');
  }

  async activate(id: string): Promise<void> {
    await this.call(() => requests.activate(id), `activate key ${id}`);
  }

  /** The raw bytes of a symmetric key. */
  async getKey(id: string): Promise<Buffer> {
    const payload = await this.call(() => requests.get(id), `get key ${id}`);
    const block = child(child(payload, 'SymmetricKey'), 'KeyBlock');
    const material = child(child(block, 'KeyValue'), 'KeyMaterial');
    if (!material || !Buffer.isBuffer(material.value)) {
      throw new TdeError(
        'ERR_TDE_KMIP_OPERATION',
        `KMIP Get of ${id} returned no raw symmetric key ` +
          `(object type ${String(child(payload, 'ObjectType')?.value)})`,
      );
    }
    return material.value;
  }

  async locate(filters: Attribute[], maximumItems?: number): Promise<string[]> {
    const payload = await this.call(
      (v) => requests.locate(v, filters, maximumItems),
      'locate keys',
    );
    return children(payload, 'UniqueIdentifier').map((u) => String(u.value));
  }

  async getAttributes(id: string, names: string[] = []): Promise<Attribute[]> {
    const payload = await this.call(
      (v) => requests.getAttributes(v, id, names),
      `get the attributes of key ${id}`,
    );
    return readAttributes(payload);
  }

  async addAttribute(id: string, attribute: Attribute): Promise<void> {
    await this.call(
      (v) => requests.addAttribute(v, id, attribute),
      `add ${attribute.name} to key ${id}`,
    );
  }

  async modifyAttribute(id: string, attribute: Attribute): Promise<void> {
    await this.call(
      (v) => requests.modifyAttribute(v, id, attribute),
      `change ${attribute.name} of key ${id}`,
    );
  }

  async revoke(id: string, reason = 'CessationOfOperation', message?: string): Promise<void> {
    const compromise = reason === 'KeyCompromise' ? new Date() : undefined;
    await this.call(() => requests.revoke(id, reason, message, compromise), `revoke key ${id}`);
  }

  async destroy(id: string): Promise<void> {
    await this.call(() => requests.destroy(id), `destroy key ${id}`);
  }

  async query(
    functions = ['QueryOperations', 'QueryObjects', 'QueryServerInformation'],
  ): Promise<TtlvItem> {
    return this.call(() => requests.query(functions), 'answer a Query');
  }

  close(): void {
    this.closed = true;
    this.connection?.close();
    this.connection = undefined;
  }
}

function uniqueIdentifier(payload: TtlvItem, operation: string): string {
  const id = child(payload, 'UniqueIdentifier')?.value;
  if (typeof id !== 'string') {
    throw new TdeError(
      'ERR_TDE_TTLV',
      `the KMIP server's answer to ${operation} has no Unique Identifier`,
    );
  }
  return id;
}

export { KmipError };
