/**
 * What the library tells an observer while it works: key lookups, KMIP round trips, chunks
 * encrypted and decrypted, failures. Key providers, KMIP clients and compressors call these hooks
 * when one is given to them (see {@link TdeObserver}); {@link TdeMetrics} counts them and turns
 * them into events. Nothing here ever carries key bytes.
 */
import type { Compressor } from '../compression/compressor';
import type { ErrorCodeName } from '../errors';

/** Where a key came from: a local system key file, or a KMIP server. */
export type KeySource = 'local' | 'kmip';

/** A key was asked for; `hit` when the provider's cache already held it. */
export interface KeyLookupEvent {
  source: KeySource;
  /** The key's name: a key file name, or `kmip://GROUP/ID`. */
  key: string;
  hit: boolean;
}

/** A key was read from its source (key file or KMIP Get), because the cache did not hold it. */
export interface KeyFetchedEvent {
  source: KeySource;
  key: string;
  /** Milliseconds the fetch took. */
  ms: number;
}

/** A key could not be fetched; the error went to the caller. */
export interface KeyFetchFailedEvent {
  source: KeySource;
  key: string;
  code: ErrorCodeName;
}

/** New data of a kind (group, namespace, cipher) is now encrypted with another key. */
export interface KeyRotatedEvent {
  source: KeySource;
  /** The key now used to encrypt. */
  key: string;
  /** The key used before. */
  previous: string;
  /** What the key serves, for example `AES/CBC/PKCS5Padding 256` (with the group and namespace). */
  purpose: string;
}

/** A key in use was found revoked, destroyed or compromised by the key-state poll. */
export interface KeyRevokedEvent {
  /** `kmip://GROUP/ID`. */
  key: string;
  /** The KMIP state found: `Deactivated`, `Compromised`, `Destroyed`, ... or `missing`. */
  state: string;
  /** `stopped`: the key encrypts nothing more from now on; `warned`: only this event. */
  action: 'stopped' | 'warned';
}

/** One round trip to a KMIP server. */
export interface KmipRequestEvent {
  group: string;
  /** `host:port`. */
  host: string;
  /** The KMIP operation, for example `Get` or `Locate`. */
  operation: string;
  ms: number;
  /** False when no answer came (connection lost, timeout); a KMIP failure answer is still ok. */
  ok: boolean;
}

/** A KMIP request moved on from a failing host and was answered by another. */
export interface KmipFailoverEvent {
  group: string;
  /** The host tried first. */
  from: string;
  /** The host that answered. */
  to: string;
  /** Why each host before `to` failed. */
  causes: string[];
}

/** Encryption or decryption work done on a batch. */
export interface CipherWorkEvent {
  op: 'encrypt' | 'decrypt';
  /** SSTable data chunks, or 4 KiB pages of an encrypted index or metadata component. */
  unit: 'chunk' | 'page';
  count: number;
  /** Uncompressed bytes in (encrypt) or out (decrypt). */
  bytes: number;
}

/** A chunk, page or SSTable metadata failed to decrypt or authenticate. */
export interface IntegrityFailureEvent {
  code: ErrorCodeName;
  message: string;
  file?: string;
  /** Chunk or page index. */
  chunk?: number;
  /** The key in use (never its bytes). */
  key?: string;
}

/** The key-state poll could not ask a KMIP group; it tries again at the next interval. */
export interface KeyStatePollFailedEvent {
  group: string;
  code: ErrorCodeName;
  message: string;
}

/** Commit log entries or hints written (and synced) encrypted. */
export interface SystemWriteEvent {
  kind: 'commitlog' | 'hints';
  /** Entries (mutations) or hints. */
  count: number;
  bytes: number;
}

/**
 * Hooks the library calls as it works. Every member is optional to implement; the library calls
 * them synchronously and never lets them change the work (an observer must not throw, except
 * {@link TdeObserver.checkEncryptionKey}, whose throw refuses the encryption).
 */
export interface TdeObserver {
  /** A key provider was asked for a key (cache hit or miss). */
  keyLookup?(e: KeyLookupEvent): void;
  /** A key was read from its key file or fetched from KMIP. */
  keyFetched?(e: KeyFetchedEvent): void;
  /** A key could not be read or fetched. */
  keyFetchFailed?(e: KeyFetchFailedEvent): void;
  /** New data is now encrypted with another key. */
  keyRotated?(e: KeyRotatedEvent): void;
  /** One KMIP round trip ended (answered or not). */
  kmipRequest?(e: KmipRequestEvent): void;
  /** A KMIP request was answered by another host than the one tried first. */
  kmipFailover?(e: KmipFailoverEvent): void;
  /** A batch of chunks or pages was encrypted or decrypted. */
  cipherWork?(e: CipherWorkEvent): void;
  /** A chunk, page or SSTable metadata failed to decrypt or authenticate (once per chunk). */
  integrityFailure?(e: IntegrityFailureEvent): void;
  /** Commit log entries or hints were written encrypted. */
  systemWrite?(e: SystemWriteEvent): void;
  /** An encrypting compressor was made (for an SSTable read or write). */
  compressorOpened?(c: Compressor): void;
  /** It was closed: its key is wiped from native memory. */
  compressorClosed?(c: Compressor): void;
  /**
   * Called before anything is encrypted with the key named `key` (a key file name or
   * `kmip://GROUP/ID`); throwing a TdeError refuses the encryption.
   */
  checkEncryptionKey?(key: string): void;
}
