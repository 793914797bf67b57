/**
 * Waiting for steps that run at once, such as writes to several files: a failure is thrown only
 * once every step has settled, so that a caller's cleanup (removing the files) never runs beside
 * a step still under way.
 */

/** Waits for every promise; then throws the first failure in the order given, if any. */
export async function settleAll(steps: readonly Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(steps);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Work started on another thread that the caller must see end before it releases what the work
 * belongs to (a reader's reads on the addon's pool, before the reader is closed).
 */
export class InFlight {
  private readonly running = new Set<Promise<void>>();

  /** Returns `work`, remembered until it settles. */
  track<T>(work: Promise<T>): Promise<T> {
    const entry: Promise<void> = work.then(
      () => void this.running.delete(entry),
      () => void this.running.delete(entry),
    );
    this.running.add(entry);
    return work;
  }

  /** Resolves once everything tracked so far has settled; never rejects. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }
}
