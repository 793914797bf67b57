/**
 * Named points in a rewrite where the crash tests kill the process. With SSTABLE_TDE_CRASH_AT set
 * to a point's name, the process sends itself SIGKILL on reaching it: no cleanup, no finally
 * blocks, exactly as a power cut or the OOM killer would stop it. SSTABLE_TDE_INTERRUPT_AT sends
 * SIGINT instead, as an operator's Ctrl-C would. SSTABLE_TDE_CRASH_AFTER=N lets the point pass
 * N times first. Unset (always, outside tests), a crash point does nothing.
 */
export const CRASH_POINTS = [
  'log-written',
  'data-writing',
  'data-written',
  'components-linked',
  'verified',
  'committed',
  'old-partly-removed',
  'old-removed',
] as const;

export type CrashPoint = (typeof CRASH_POINTS)[number];

/** Times each point was reached, for SSTABLE_TDE_CRASH_AFTER. */
const reached = new Map<CrashPoint, number>();

export function crashPoint(name: CrashPoint): void {
  if (process.env.SSTABLE_TDE_CRASH_AT === undefined && !process.env.SSTABLE_TDE_INTERRUPT_AT)
    return;
  // SSTABLE_TDE_CRASH_AFTER=N: the point acts only once it has been passed N times (the
  // N+1-th SSTable to reach it), so a test can let earlier SSTables finish.
  const times = (reached.get(name) ?? 0) + 1;
  reached.set(name, times);
  if (times <= Number(process.env.SSTABLE_TDE_CRASH_AFTER ?? 0)) return;
  if (process.env.SSTABLE_TDE_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
  if (process.env.SSTABLE_TDE_INTERRUPT_AT === name) process.kill(process.pid, 'SIGINT');
}
