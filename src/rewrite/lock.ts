/**
 * One rewrite per data directory at a time: a lock file that names its holder, so a second run
 * can say who holds it. A holder that died (same host, process gone) leaves a stale lock, which
 * the next run takes over.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { fromSystem, TdeError } from '../errors';

export const LOCK_NAME = '.sstable-tde.lock';

interface Holder {
  pid: number;
  host: string;
  command: string;
  since: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface DirectoryLock {
  release(): void;
}

export function lockDataDirectory(dataDir: string, command: string): DirectoryLock {
  const file = path.join(dataDir, LOCK_NAME);
  const me: Holder = { pid: process.pid, host: os.hostname(), command, since: new Date().toISOString() };

  for (let attempt = 0; ; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o644);
      fs.writeSync(fd, JSON.stringify(me) + '\n');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystem(err, file, 'create lock file');
    }

    let holder: Partial<Holder> = {};
    try {
      holder = JSON.parse(fs.readFileSync(file, 'utf8')) as Holder;
    } catch {
      // A lock whose holder died while writing it: treat as stale below.
    }
    const stale = typeof holder.pid !== 'number' || (holder.host === me.host && !alive(holder.pid));
    if (stale && attempt === 0) {
      fs.rmSync(file, { force: true });
      continue;
    }
    throw new TdeError(
      'ERR_TDE_LOCKED',
      `data directory ${dataDir} is locked by process ${holder.pid ?? '?'} on host ` +
        `${holder.host ?? '?'} (${holder.command ?? 'unknown command'}, since ${holder.since ?? '?'}); ` +
        `wait for it to finish, or if that process no longer runs, remove ${file}`,
      { file },
    );
  }

  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.removeListener('exit', release);
    fs.rmSync(file, { force: true });
  };
  process.on('exit', release);
  return { release };
}
