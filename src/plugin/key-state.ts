/**
 * The key-state poll: every interval, the state of each KMIP key in use is asked of its server
 * (Get Attributes: State). A key found revoked (Deactivated), compromised or destroyed is
 * reported once; the plugin then stops encrypting with it or only warns, as configured.
 *
 * The timer never keeps the process alive, and a poll still running when the next is due is
 * not doubled.
 */
import { isTdeError } from '../errors';
import { keyState } from '../keys/kmip-admin';
import { KmipKeyProvider } from '../keys/kmip-provider';
import { KmipError } from '../kmip/client';
import type { KeyStatePollFailedEvent } from '../metrics/observer';
import { parseKmipUrl } from '../config/config';

/** KMIP states in which a key must not encrypt any more; `missing` when the server lost it. */
export const STOPPED_STATES = [
  'Deactivated',
  'Compromised',
  'Destroyed',
  'DestroyedCompromised',
  'missing',
];

/** What the poller needs from the plugin. */
export interface KeyStatePollerOptions {
  intervalMs: number;
  kmip: KmipKeyProvider;
  /** The keys to check, as `kmip://GROUP/ID` (others are ignored). */
  inUse(): Iterable<string>;
  /** A key in use is in one of {@link STOPPED_STATES}; called once per key. */
  revoked(key: string, state: string): void;
  /** A group could not be asked this time. */
  failed(e: KeyStatePollFailedEvent): void;
}

/** Polls the state of the KMIP keys in use; see the file comment. */
export class KeyStatePoller {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly reported = new Set<string>();

  constructor(private readonly options: KeyStatePollerOptions) {}

  /** Starts the timer (unref'd); does nothing when the interval is 0 or it already runs. */
  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.pollNow(), this.options.intervalMs);
    this.timer.unref();
  }

  /** Polls now, or joins the poll in progress. Never rejects: failures are reported. */
  pollNow(): Promise<void> {
    this.running ??= this.poll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async poll(): Promise<void> {
    const byGroup = new Map<string, string[]>();
    for (const key of new Set(this.options.inUse())) {
      const url = parseKmipUrl(key);
      if (!url || this.reported.has(key)) continue;
      byGroup.set(url.group, [...(byGroup.get(url.group) ?? []), url.id]);
    }
    // Groups in parallel: one unreachable group must not delay news of another's keys.
    await Promise.all([...byGroup].map(([group, ids]) => this.pollGroup(group, ids)));
  }

  private async pollGroup(group: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      let state: string | undefined;
      try {
        state = await keyState(this.options.kmip.client(group), id);
      } catch (err) {
        if (err instanceof KmipError && err.reason === 'ItemNotFound') {
          state = 'missing';
        } else {
          this.options.failed({
            group,
            code: isTdeError(err) ? err.code : 'ERR_TDE_KMIP_UNAVAILABLE',
            message: err instanceof Error ? err.message : String(err),
          });
          return;
        }
      }
      const key = `kmip://${group}/${id}`;
      if (state !== undefined && STOPPED_STATES.includes(state) && !this.reported.has(key)) {
        this.reported.add(key);
        this.options.revoked(key, state);
      }
    }
  }

  /** Stops the timer and waits for a poll in progress to end. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
