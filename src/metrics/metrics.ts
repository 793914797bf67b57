/**
 * Counters for everything a {@link TdeObserver} hears, a snapshot of them, and events for the
 * things a storage process may want to act on. The CLI prints the snapshot (`--metrics`); the
 * plugin (plugin/plugin.ts) emits the events on itself.
 */
import type { EventEmitter } from 'node:events';

import {
  CipherWorkEvent,
  IntegrityFailureEvent,
  KeyFetchedEvent,
  KeyFetchFailedEvent,
  KeyLookupEvent,
  KeyRevokedEvent,
  KeyRotatedEvent,
  KeyStatePollFailedEvent,
  KmipFailoverEvent,
  KmipRequestEvent,
  SystemWriteEvent,
  TdeObserver,
} from './observer';

/**
 * Events, by name, with their one argument. None is called `error`, so an event without a
 * listener never throws.
 */
export interface TdeEvents {
  /** A key was read from its key file or fetched from KMIP (a cache miss). */
  keyFetched: [KeyFetchedEvent];
  /** New data is now encrypted with another key. */
  keyRotated: [KeyRotatedEvent];
  /** The key-state poll found a key in use revoked, destroyed or compromised. */
  keyRevoked: [KeyRevokedEvent];
  /** The key-state poll could not reach a KMIP group this time. */
  keyStatePollFailed: [KeyStatePollFailedEvent];
  /** One KMIP round trip, with its latency. */
  kmipRequest: [KmipRequestEvent];
  /** A KMIP request failed over to another host of its group. */
  kmipFailover: [KmipFailoverEvent];
  /** A chunk, page or SSTable metadata failed to decrypt or authenticate. */
  integrityFailure: [IntegrityFailureEvent];
}

/** Upper bounds (milliseconds) of the KMIP latency histogram's buckets; the last is open. */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] as const;

/** Encryption or decryption work done. */
export interface CipherCounts {
  /** SSTable data chunks. */
  chunks: number;
  /** 4 KiB pages of encrypted index and metadata components. */
  pages: number;
  /** Uncompressed bytes of those chunks and pages. */
  bytes: number;
}

/** KMIP round-trip latency: count, sum and maximum, and a histogram. */
export interface LatencySummary {
  count: number;
  totalMs: number;
  maxMs: number;
  /** Requests per bucket, keyed by the bucket's upper bound in ms (`"+Inf"` for the last). */
  buckets: Record<string, number>;
}

/** Every counter at one moment. Counters only grow; compare two snapshots for rates. */
export interface MetricsSnapshot {
  encrypted: CipherCounts;
  decrypted: CipherCounts;
  /** Chunks, pages or SSTable metadata that failed to decrypt or authenticate (each once). */
  integrityFailures: number;
  keys: {
    /** Lookups answered from a provider's cache. */
    cacheHits: number;
    /** Lookups that had to read a key file or ask KMIP. */
    cacheMisses: number;
    /** Keys read from key files or fetched from KMIP. */
    fetches: number;
    fetchFailures: number;
    rotations: number;
    /** Keys the key-state poll found revoked, destroyed or compromised. */
    revoked: number;
    /** Encryptions refused because their key was revoked. */
    refusals: number;
  };
  kmip: {
    requests: number;
    /** Requests that got no answer (connection lost, timed out). */
    errors: number;
    failovers: number;
    latency: LatencySummary;
  };
  /** Commit log entries written encrypted (counted when synced). */
  commitLog: { entries: number; bytes: number };
  hints: { hints: number; bytes: number };
}

function cipherCounts(): CipherCounts {
  return { chunks: 0, pages: 0, bytes: 0 };
}

/**
 * Counts what the library reports and, given an emitter, emits the {@link TdeEvents} on it.
 * Pass it where an observer is taken (`new KeyProviders(config, { observer })`,
 * `verifyDataDirectory({ observer })`, ...), or let openPlugin make one.
 */
export class TdeMetrics implements TdeObserver {
  private encrypted = cipherCounts();
  private decrypted = cipherCounts();
  private integrity = 0;
  private readonly keys = {
    cacheHits: 0,
    cacheMisses: 0,
    fetches: 0,
    fetchFailures: 0,
    rotations: 0,
    revoked: 0,
    refusals: 0,
  };
  private readonly kmip = { requests: 0, errors: 0, failovers: 0 };
  private readonly latency = {
    count: 0,
    totalMs: 0,
    maxMs: 0,
    buckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0),
  };
  private readonly commitLog = { entries: 0, bytes: 0 };
  private readonly hintsCount = { hints: 0, bytes: 0 };

  /** @param events where to emit {@link TdeEvents}; none: count only. */
  constructor(private readonly events?: EventEmitter<TdeEvents>) {}

  private emit<K extends keyof TdeEvents>(name: K, ...args: TdeEvents[K]): void {
    if (!this.events) return;
    try {
      (this.events.emit as (n: K, ...a: TdeEvents[K]) => boolean)(name, ...args);
    } catch (err) {
      // A listener's bug must not break the encryption or KMIP call that reported the event; it
      // surfaces as an uncaught exception, as it would from any emitter, just not in our stack.
      process.nextTick(() => {
        throw err;
      });
    }
  }

  /** Counts a cache hit or miss. */
  keyLookup(e: KeyLookupEvent): void {
    if (e.hit) this.keys.cacheHits++;
    else this.keys.cacheMisses++;
  }

  /** Counts a fetch and emits `keyFetched`. */
  keyFetched(e: KeyFetchedEvent): void {
    this.keys.fetches++;
    this.emit('keyFetched', e);
  }

  /** Counts a failed fetch (the caller got the error). */
  keyFetchFailed(_e: KeyFetchFailedEvent): void {
    this.keys.fetchFailures++;
  }

  /** Counts a rotation and emits `keyRotated`. */
  keyRotated(e: KeyRotatedEvent): void {
    this.keys.rotations++;
    this.emit('keyRotated', e);
  }

  /** Counts and announces a revoked key (called by the plugin's key-state poll). */
  keyRevoked(e: KeyRevokedEvent): void {
    this.keys.revoked++;
    this.emit('keyRevoked', e);
  }

  /** Counts an encryption refused because its key was revoked. */
  encryptionRefused(): void {
    this.keys.refusals++;
  }

  /** Emits `keyStatePollFailed`. */
  keyStatePollFailed(e: KeyStatePollFailedEvent): void {
    this.emit('keyStatePollFailed', e);
  }

  /** Counts a KMIP round trip and its latency, and emits `kmipRequest`. */
  kmipRequest(e: KmipRequestEvent): void {
    this.kmip.requests++;
    if (!e.ok) this.kmip.errors++;
    const l = this.latency;
    l.count++;
    l.totalMs += e.ms;
    l.maxMs = Math.max(l.maxMs, e.ms);
    const at = LATENCY_BUCKETS_MS.findIndex((le) => e.ms <= le);
    l.buckets[at < 0 ? LATENCY_BUCKETS_MS.length : at]++;
    this.emit('kmipRequest', e);
  }

  /** Counts a failover and emits `kmipFailover`. */
  kmipFailover(e: KmipFailoverEvent): void {
    this.kmip.failovers++;
    this.emit('kmipFailover', e);
  }

  /** Counts chunks or pages and their bytes. */
  cipherWork(e: CipherWorkEvent): void {
    const c = e.op === 'encrypt' ? this.encrypted : this.decrypted;
    if (e.unit === 'chunk') c.chunks += e.count;
    else c.pages += e.count;
    c.bytes += e.bytes;
  }

  /** Counts an integrity failure and emits `integrityFailure`. */
  integrityFailure(e: IntegrityFailureEvent): void {
    this.integrity++;
    this.emit('integrityFailure', e);
  }

  /** Counts commit log entries or hints written. */
  systemWrite(e: SystemWriteEvent): void {
    const c = e.kind === 'commitlog' ? this.commitLog : undefined;
    if (c) {
      c.entries += e.count;
      c.bytes += e.bytes;
    } else {
      this.hintsCount.hints += e.count;
      this.hintsCount.bytes += e.bytes;
    }
  }

  /** A copy of every counter now. */
  snapshot(): MetricsSnapshot {
    const buckets: Record<string, number> = {};
    LATENCY_BUCKETS_MS.forEach((le, i) => (buckets[String(le)] = this.latency.buckets[i]));
    buckets['+Inf'] = this.latency.buckets[LATENCY_BUCKETS_MS.length];
    return {
      encrypted: { ...this.encrypted },
      decrypted: { ...this.decrypted },
      integrityFailures: this.integrity,
      keys: { ...this.keys },
      kmip: {
        ...this.kmip,
        latency: {
          count: this.latency.count,
          totalMs: round(this.latency.totalMs),
          maxMs: round(this.latency.maxMs),
          buckets,
        },
      },
      commitLog: { ...this.commitLog },
      hints: { ...this.hintsCount },
    };
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** A snapshot as lines of text for a person (the CLI's `--metrics`). */
export function formatMetrics(m: MetricsSnapshot): string[] {
  const n = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
  const work = (c: CipherCounts) =>
    `${n(c.chunks, 'chunk')}, ${n(c.pages, 'page')}, ${n(c.bytes, 'byte')}`;
  const l = m.kmip.latency;
  const lines = [
    `encrypted          ${work(m.encrypted)}`,
    `decrypted          ${work(m.decrypted)}`,
    `integrity failures ${m.integrityFailures}`,
    `keys               ${m.keys.fetches} fetched (${m.keys.fetchFailures} failed), ` +
      `cache ${m.keys.cacheHits} hits / ${m.keys.cacheMisses} misses, ` +
      `${m.keys.rotations} rotated, ${m.keys.revoked} revoked, ${m.keys.refusals} refused`,
    `kmip               ${m.kmip.requests} requests, ${m.kmip.errors} unanswered, ` +
      `${m.kmip.failovers} failovers`,
  ];
  if (l.count > 0) {
    const mean = (l.totalMs / l.count).toFixed(1);
    lines.push(`kmip latency       mean ${mean} ms, max ${l.maxMs.toFixed(1)} ms`);
  }
  if (m.commitLog.entries > 0) {
    lines.push(`commit log         ${m.commitLog.entries} entries, ${m.commitLog.bytes} bytes`);
  }
  if (m.hints.hints > 0) {
    lines.push(`hints              ${m.hints.hints} hints, ${m.hints.bytes} bytes`);
  }
  return lines;
}
