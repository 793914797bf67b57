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
