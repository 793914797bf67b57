/**
 * Keys from KMIP servers (`key_provider: KmipKeyProviderFactory`, `kmip_host: GROUP`, optional
 * `key_namespace`).
 *
 * - To encrypt, a table uses the newest active key of its algorithm and length in its group
 *   (and namespace, carried as the KMIP Object Group attribute), skipping keys whose Protect Stop
 *   Date or Deactivation Date has passed; if there is none, it creates and activates one.
 * - The key's KMIP id is recorded with the data (CompressionInfo.db option `kmip_key_id`), so a
 *   read fetches exactly that key later, even after newer keys have taken over.
 * - Choices and fetched keys are cached for `key_cache_millis`: in steady state there is no KMIP
 *   round trip per chunk or per SSTable. When the cache expires the choice is made again, so an
 *   expired, deactivated or revoked key stops being used to encrypt, but still decrypts as long as
 *   the server still hands it out. A destroyed key is an error naming its id.
 */
import { CipherChoice } from '../cipher/transformation';
import { EncryptionSettings } from '../compression/options';
import { buildKmipGroup, KmipGroupSettings, unknownGroup } from '../config/kmip-hosts';
import { TdeError } from '../errors';
import { KmipClient, KmipError } from '../kmip/client';
import { Attribute } from '../kmip/messages';
import { keyCheckValue } from './key-check';
import { newKeyAttributes, tdeInfo } from './kmip-key-info';
import { isAuthenticated, KeyProvider, ResolvedKey } from './provider';
import { SecretBytes } from './secret-bytes';
import { TdeObserver } from '../metrics/observer';

/** The CompressionInfo.db option that records which KMIP key encrypted an SSTable. */
export const KMIP_KEY_ID_OPTION = 'kmip_key_id';

/** How a cipher choice is asked of a KMIP server: algorithm name and key length in bits. */
export function kmipKeySpec(choice: CipherChoice): { algorithm: string; length: number } {
  switch (choice.algorithm) {
    case 'AES':
      return { algorithm: 'AES', length: choice.strength };
    case 'DESede':
      // KMIP counts the bits stored, parity included: 16 bytes for two-key, 24 for three-key.
      return { algorithm: 'TripleDES', length: choice.strength === 112 ? 128 : 192 };
    case 'DES':
      return { algorithm: 'DES', length: 64 };
    default:
      return { algorithm: choice.algorithm, length: choice.strength };
  }
}

export interface KeyState {
  id: string;
  /** The transformation sstable-tde made the key for, if it made it. */
  cipher?: string;
  state?: string;
  initialDate?: bigint;
  protectStopDate?: bigint;
  deactivationDate?: bigint;
  objectGroup?: string;
  name?: string;
}

export function keyStateOf(id: string, attrs: Attribute[]): KeyState {
  const get = (n: string) => attrs.find((a) => a.name === n)?.value;
  // Servers without Protect Stop Date get the expiry in sstable-tde's own entry (kmip-admin.ts).
  const recorded = tdeInfo(attrs)['protect-stop-date'];
  const psd =
    typeof get('ProtectStopDate') === 'bigint'
      ? (get('ProtectStopDate') as bigint)
      : recorded && /^\d+$/.test(recorded)
        ? BigInt(recorded)
        : undefined;
  const name = attrs.find((a) => a.name === 'Name')?.value;
  const nameValue = Array.isArray(name)
    ? name.find((c) => c.tag === 'NameValue')?.value
    : undefined;
  return {
    id,
    cipher: tdeInfo(attrs).cipher,
    state: get('State') === undefined ? undefined : String(get('State')),
    initialDate:
      typeof get('InitialDate') === 'bigint' ? (get('InitialDate') as bigint) : undefined,
    protectStopDate: psd,
    deactivationDate:
      typeof get('DeactivationDate') === 'bigint' ? (get('DeactivationDate') as bigint) : undefined,
    objectGroup:
      typeof get('ObjectGroup') === 'string' ? (get('ObjectGroup') as string) : undefined,
    name: typeof nameValue === 'string' ? nameValue : undefined,
  };
}

/**
 * Whether a key may encrypt new data at `nowSeconds`: active, not past its Protect Stop Date or
 * Deactivation Date, and in the wanted namespace (no namespace wanted: no Object Group set).
 */
export function usableForEncryption(
  k: KeyState,
  nowSeconds: bigint,
  namespace: string | undefined,
): boolean {
  if (k.state !== 'Active') return false;
  if (k.protectStopDate !== undefined && k.protectStopDate <= nowSeconds) return false;
  if (k.deactivationDate !== undefined && k.deactivationDate <= nowSeconds) return false;
  return namespace === undefined ? k.objectGroup === undefined : k.objectGroup === namespace;
}

/** The key to encrypt with among usable candidates: the newest, then the highest id. */
export function pickCurrentKey(candidates: KeyState[]): KeyState | undefined {
  return [...candidates].sort((a, b) => {
    const da = a.initialDate ?? 0n;
    const db = b.initialDate ?? 0n;
    if (da !== db) return da > db ? -1 : 1;
    return b.id.localeCompare(a.id, 'en', { numeric: true });
  })[0];
}

/** The cache key of a key choice: group, namespace, KMIP algorithm and length. */
function choiceSlot(group: string, namespace: string | undefined, choice: CipherChoice): string {
  const spec = kmipKeySpec(choice);
  return `${group}\0${namespace ?? ''}\0${spec.algorithm}\0${spec.length}`;
}

interface Cached {
  bytes: SecretBytes;
  /** The transformation recorded on the key, if sstable-tde made it. */
  cipher?: string;
  until: number;
}

export interface KmipProviderOptions {
  /** Milliseconds since the epoch; tests and long-running processes may supply their own clock. */
  now?: () => number;
  /** Told of key lookups, fetches, rotations and every KMIP round trip. */
  observer?: TdeObserver;
}

export class KmipKeyProvider implements KeyProvider {
  private readonly clients = new Map<string, KmipClient>();
  /** (group, namespace, algorithm, length) → the id chosen to encrypt with, until when. */
  private readonly current = new Map<string, { id: string; until: number }>();
  /** (group, id) → key bytes, until when. */
  private readonly keys = new Map<string, Cached>();
  /** Choices in progress, so concurrent callers share one Locate (and never create two keys). */
  private readonly choosing = new Map<string, Promise<string>>();
  /** slot → the last id chosen, kept past expiry to tell a rotation from a first choice. */
  private readonly lastChosen = new Map<string, string>();
  private readonly now: () => number;
  readonly observer: TdeObserver | undefined;

  constructor(
    private readonly groups: Map<string, KmipGroupSettings>,
    options: KmipProviderOptions = {},
    private readonly configFile?: string,
  ) {
    this.now = options.now ?? Date.now;
    this.observer = options.observer;
  }

  /** The client for a group (made, and its stores loaded, on first use). */
  client(group: string): KmipClient {
    let c = this.clients.get(group);
    if (!c) {
      const settings = this.groups.get(group);
      if (!settings) throw unknownGroup(group, this.groups, this.configFile);
      c = new KmipClient(buildKmipGroup(settings), this.observer);
      this.clients.set(group, c);
    }
    return c;
  }

  private ttl(group: string): number {
    return this.groups.get(group)?.keyCacheMillis ?? 0;
  }

  /**
   * The key for these settings. With `create: false` (system_info_encryption, which DSE never
   * lets create keys) a missing key is an error saying how to make one.
   */
  async keyFor(
    settings: EncryptionSettings,
    choice: CipherChoice,
    options: { create?: boolean } = {},
  ): Promise<ResolvedKey> {
    const group = settings.kmipHost;
    if (!group) throw new TdeError('ERR_TDE_BAD_OPTION', 'a KMIP-keyed table needs kmip_host');
    const id =
      settings.kmipKeyId ??
      (await this.currentKeyId(group, settings.keyNamespace, choice, options.create ?? true));
    const bytes = await this.fetch(group, id, choice);
    return {
      bytes,
      keyCheckValue: keyCheckValue(bytes),
      id: `kmip://${group}/${id}`,
      record: { [KMIP_KEY_ID_OPTION]: id },
    };
  }

  /**
   * Drops the cached choice of key for these settings, so the next encryption chooses afresh
   * (after a new key was made). Returns the id last chosen for them, if any.
   */
  forgetCurrent(
    group: string,
    namespace: string | undefined,
    choice: CipherChoice,
  ): string | undefined {
    const slot = choiceSlot(group, namespace, choice);
    this.current.delete(slot);
    return this.lastChosen.get(slot);
  }

  private async currentKeyId(
    group: string,
    namespace: string | undefined,
    choice: CipherChoice,
    create: boolean,
  ): Promise<string> {
    const spec = kmipKeySpec(choice);
    const slot = choiceSlot(group, namespace, choice);
    const cached = this.current.get(slot);
    if (cached && cached.until > this.now()) return cached.id;

    let pending = this.choosing.get(slot);
    if (!pending) {
      pending = this.choose(group, namespace, choice, create).finally(() =>
        this.choosing.delete(slot),
      );
      this.choosing.set(slot, pending);
    }
    const id = await pending;
    this.current.set(slot, { id, until: this.now() + this.ttl(group) });
    const previous = this.lastChosen.get(slot);
    this.lastChosen.set(slot, id);
    if (previous !== undefined && previous !== id) {
      this.observer?.keyRotated?.({
        source: 'kmip',
        key: `kmip://${group}/${id}`,
        previous: `kmip://${group}/${previous}`,
        purpose:
          `${choice.name} ${choice.strength} in KMIP group ${group}` +
          (namespace !== undefined ? `, namespace ${namespace}` : ''),
      });
    }
    return id;
  }

  /**
   * Keys currently chosen to encrypt new data, as `kmip://GROUP/ID`: the ones whose state is
   * worth watching.
   */
  keysInUse(): string[] {
    const out = new Set<string>();
    for (const [slot, c] of this.current) out.add(`kmip://${slot.split('\0')[0]}/${c.id}`);
    return [...out];
  }

  /**
   * Drops every cached choice of key `id` of `group`, so the next encryption chooses afresh (a
   * revoked key is then passed over). Its bytes stay cached for reads.
   */
  forgetChoice(group: string, id: string): void {
    for (const [slot, c] of this.current) {
      if (c.id === id && slot.startsWith(`${group}\0`)) this.current.delete(slot);
    }
  }

  private async choose(
    group: string,
    namespace: string | undefined,
    choice: CipherChoice,
    create: boolean,
  ): Promise<string> {
    const client = this.client(group);
    const spec = kmipKeySpec(choice);
    const filters: Attribute[] = [
      { name: 'ObjectType', type: 'Enumeration', value: 'SymmetricKey' },
      { name: 'CryptographicAlgorithm', type: 'Enumeration', value: spec.algorithm },
      { name: 'CryptographicLength', type: 'Integer', value: spec.length },
      { name: 'State', type: 'Enumeration', value: 'Active' },
      ...(namespace !== undefined
        ? [{ name: 'ObjectGroup', type: 'TextString' as const, value: namespace }]
        : []),
    ];
    const ids = await client.locate(filters);
    const nowSeconds = BigInt(Math.floor(this.now() / 1000));
    const states: KeyState[] = [];
    for (const id of ids) states.push(keyStateOf(id, await client.getAttributes(id)));
    // Keys for authenticated chunks serve GCM only, and GCM only such keys (see provider.ts).
    const gcm = choice.mode === 'GCM';
    const usable = states.filter(
      (k) =>
        usableForEncryption(k, nowSeconds, namespace) && isAuthenticated(k.cipher ?? '') === gcm,
    );
    const chosen = pickCurrentKey(usable);
    if (chosen) return chosen.id;
    if (!create) {
      throw new TdeError(
        'ERR_TDE_KEY_NOT_FOUND',
        `KMIP group ${group} has no active ${choice.name} ${choice.strength}-bit ` +
          `key${namespace ? ` in namespace ${namespace}` : ''} for system_info_encryption; ` +
          `create one with "sstable-tde createsystemkey ${choice.name} ${choice.strength} -k ` +
          `${group}${namespace ? ` -n ${namespace}` : ''}"`,
      );
    }

    const id = await client.createSymmetricKey({
      algorithm: spec.algorithm,
      length: spec.length,
      name:
        `sstable-tde ${namespace ? `${namespace} ` : ''}${choice.name} ${choice.strength} ` +
        `${new Date(this.now()).toISOString()}`,
      attributes: newKeyAttributes(choice, namespace),
    });
    await client.activate(id);
    return id;
  }

  private async fetch(group: string, id: string, choice: CipherChoice): Promise<Buffer> {
    const slot = `${group}\0${id}`;
    const url = `kmip://${group}/${id}`;
    const cached = this.keys.get(slot);
    const hit = cached !== undefined && cached.until > this.now();
    this.observer?.keyLookup?.({ source: 'kmip', key: url, hit });
    if (cached && hit) return this.checkKind(group, id, cached, choice);
    // Expired: the bytes are not kept a moment longer than key_cache_millis says.
    if (cached) {
      cached.bytes.wipe();
      this.keys.delete(slot);
    }

    const client = this.client(group);
    let bytes: Buffer;
    let cipher: string | undefined;
    const started = performance.now();
    try {
      bytes = await client.getKey(id);
      cipher = keyStateOf(id, await client.getAttributes(id)).cipher;
    } catch (err) {
      const gone =
        err instanceof KmipError &&
        (err.reason === 'ItemNotFound' || err.reason === 'PermissionDenied');
      const code = gone
        ? 'ERR_TDE_KEY_NOT_FOUND'
        : err instanceof TdeError
          ? err.code
          : 'ERR_TDE_KMIP_OPERATION';
      this.observer?.keyFetchFailed?.({ source: 'kmip', key: url, code });
      if (err instanceof KmipError && gone) {
        throw new TdeError(
          'ERR_TDE_KEY_NOT_FOUND',
          `KMIP key ${id} of group ${group} cannot be fetched ` +
            `(${err.reason}${err.resultMessage ? `: ${err.resultMessage}` : ''}): if it was ` +
            `destroyed, data ` +
            'encrypted with it can no longer be read; otherwise check that this client (its ' +
            'certificate) owns the key',
          { key: `kmip://${group}/${id}` },
          err,
        );
      }
      throw err;
    }
    const expected = choice.algorithm === 'DESede' && bytes.length === 16 ? 16 : choice.keyLength;
    if (bytes.length !== expected) {
      bytes.fill(0);
      throw new TdeError(
        'ERR_TDE_KEY_LENGTH',
        `KMIP key ${id} of group ${group} has ${bytes.length} bytes, ` +
          `but ${choice.name} at ${choice.strength} bits needs ${expected}`,
        { key: `kmip://${group}/${id}` },
      );
    }
    const entry: Cached = {
      bytes: new SecretBytes(bytes),
      cipher,
      until: this.now() + this.ttl(group),
    };
    bytes.fill(0);
    this.keys.set(slot, entry);
    this.observer?.keyFetched?.({ source: 'kmip', key: url, ms: performance.now() - started });
    return this.checkKind(group, id, entry, choice);
  }

  /** A key for authenticated chunks serves GCM only, and GCM only such a key. */
  private checkKind(group: string, id: string, entry: Cached, choice: CipherChoice): Buffer {
    if (isAuthenticated(entry.cipher ?? '') !== (choice.mode === 'GCM')) {
      throw new TdeError(
        'ERR_TDE_WRONG_KEY',
        `KMIP key ${id} of group ${group} was made for ` +
          `${entry.cipher ?? 'unauthenticated modes'} and cannot serve ${choice.name}: keys for ` +
          `authenticated ` +
          '(GCM) chunks are kept apart, so an SSTable cannot be switched to an unauthenticated ' +
          "mode under the same key; the SSTable's metadata may have been altered",
        { key: `kmip://${group}/${id}` },
      );
    }
    return entry.bytes.copy();
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    for (const k of this.keys.values()) k.bytes.wipe();
    this.keys.clear();
    this.current.clear();
  }
}
