/**
 * One rewrite per data directory, and per table directory, at a time: a lock file that names its
 * holder, so a second run can say who holds it. Table directories are locked too because one may
 * be reached from two data directories through symbolic links.
 *
 * - The lock appears atomically with its content: it is written to a private file, then linked
 *   to the lock's name, which fails if the name exists.
 * - A holder that died (same host, process gone or a zombie) leaves a stale lock. Breaking it
 *   happens under a second, short-lived guard file, and only if the lock still holds the very
 *   content seen as stale, so two runs that find the same stale lock cannot both go ahead.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { fromSystem, TdeError } from '../errors';
import { exists, writeFullySync } from '../util/files';

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
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process stays a zombie until its parent reaps it; it holds nothing any more.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** What a lock file says of its holder: only fields of the right type (the file may be damaged). */
function parseHolder(text: string): Partial<Holder> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
  const p = parsed as Record<string, unknown>;
  const holder: Partial<Holder> = {};
  if (typeof p.pid === 'number' && Number.isSafeInteger(p.pid) && p.pid > 0) holder.pid = p.pid;
  for (const field of ['host', 'command', 'since'] as const) {
    if (typeof p[field] === 'string') holder[field] = p[field];
  }
  return holder;
}

/** Whether a lock's content names a process that is certainly gone. */
function stale(holder: Partial<Holder>): boolean {
  return typeof holder.pid === 'number' && holder.host === os.hostname() && !alive(holder.pid);
}

/**
 * A lock file's text, or undefined when there is none. Only a regular file is read: a symbolic
 * link (which a dangling one would make look absent forever) or a FIFO (which would block) in
 * the lock's place is refused, since it is no lock this package wrote.
 */
function readIfExists(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(
      file,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
    );
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw notALock(file, 'a symbolic link');
    if (code === 'ENXIO') throw notALock(file, 'a socket');
    throw fromSystem(err, file, 'read lock file');
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw notALock(file, st.isDirectory() ? 'a directory' : 'a special file');
    // A lock this package writes is one short line of JSON.
    if (st.size > 64 * 1024) throw notALock(file, `a file of ${st.size} bytes`);
    return fs.readFileSync(fd, 'utf8');
  } catch (err) {
    throw err instanceof TdeError ? err : fromSystem(err, file, 'read lock file');
  } finally {
    fs.closeSync(fd);
  }
}

function notALock(file: string, what: string): TdeError {
  return new TdeError(
    'ERR_TDE_LOCKED',
    `${file} is ${what}, not a lock file sstable-tde wrote; if no sstable-tde command is ` +
      `running here, remove it`,
    { file },
  );
}

/**
 * The private file that createWith links into place: named after its host and process, so that
 * one left by a process killed in between can be told from one that is in use (see sweepTemps).
 */
const TEMP = /^(.+)\.tmp-(.+)-(\d+)-[0-9a-f]{8}$/;

/** Creates `file` holding `text`, atomically; false if it exists already. */
function createWith(file: string, text: string): boolean {
  const tmp = `${file}.tmp-${os.hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    try {
      writeFullySync(fd, Buffer.from(text));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw fromSystem(err, file, 'create lock file');
  } finally {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // Tidying only: the next lock taker removes it once this process is gone (sweepTemps).
    }
  }
}

function remove(file: string, what: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch (err) {
    throw fromSystem(err, file, `remove ${what}`);
  }
}

/** Removes a stale lock if it still holds `seen`. False when another run is busy breaking it. */
function breakStale(file: string, seen: string): boolean {
  const guard = `${file}.break`;
  const me = JSON.stringify({ pid: process.pid, host: os.hostname() });
  if (!createWith(guard, me)) {
    // A breaker that died while holding the guard must not block everyone forever.
    const other = readIfExists(guard);
    if (other !== undefined && stale(parseHolder(other))) remove(guard, 'stale lock guard');
    return false;
  }
  try {
    if (readIfExists(file) === seen) remove(file, 'stale lock');
    return true;
  } finally {
    remove(guard, 'lock guard');
  }
}

/**
 * Removes what lock takers on this host left when they died (a SIGKILL, a power cut), which
 * nothing else would ever remove: the private files createWith links into place, and the guard
 * of a breaker that died after removing a stale lock.
 */
function sweepTemps(dataDir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dataDir);
  } catch {
    return; // tidying only: the lock itself is held
  }
  const guard = `${LOCK_NAME}.break`;
  for (const name of names) {
    const m = TEMP.exec(name);
    try {
      const deadTemp =
        m !== null &&
        (m[1] === LOCK_NAME || m[1] === guard) &&
        m[2] === os.hostname() &&
        !alive(Number(m[3]));
      const deadGuard =
        name === guard && stale(parseHolder(readIfExists(path.join(dataDir, name)) ?? ''));
      if (deadTemp || deadGuard) fs.rmSync(path.join(dataDir, name), { force: true });
    } catch {
      // tidying only, as above
    }
  }
}

/**
 * Locks this process holds, released at exit: one 'exit' listener for all of them, so that a
 * process holding many (a test suite, a server) does not make Node warn about listeners.
 */
const heldLocks = new Set<() => void>();
let exitListener = false;
function releaseAtExit(release: () => void): void {
  if (!exitListener) {
    exitListener = true;
    process.on('exit', () => {
      for (const r of [...heldLocks]) r();
    });
  }
  heldLocks.add(release);
}

export interface DirectoryLock {
  release(): void;
}

export function lockDataDirectory(dataDir: string, command: string): DirectoryLock {
  return lockDirectory(dataDir, command, 'data directory');
}

/**
 * Locks each table directory a run may change, by its real path, so that a table reached
 * through symbolic links from two data directories is still rewritten by one run at a time
 * (each run holds only its own data directory's lock). All or none: if one is held elsewhere,
 * those already taken are released and ERR_TDE_LOCKED is thrown. A directory this process may
 * not write to is passed over. Two entries of `tables` that are one directory are refused
 * (ERR_TDE_DATA_DIR): a run must meet each table once.
 */
export function lockTableDirectories(tables: readonly string[], command: string): DirectoryLock {
  const seen = new Map<string, string>();
  const taken: DirectoryLock[] = [];
  const release = () => {
    for (const lock of taken.splice(0).reverse()) lock.release();
  };
  try {
    for (const dir of tables) {
      // One directory by whatever path (links, bind mounts): told by device and inode.
      let real: string;
      let identity: string;
      try {
        real = fs.realpathSync(dir);
        const st = fs.statSync(real);
        identity = `${st.dev}:${st.ino}`;
      } catch (err) {
        throw fromSystem(err, dir, 'open table directory');
      }
      const first = seen.get(identity);
      if (first !== undefined) {
        throw new TdeError(
          'ERR_TDE_DATA_DIR',
          `${first} and ${dir} are one directory, reached twice (through symbolic links or ` +
            'mounts): a run must meet each table once; name the keyspace and tables to rewrite, ' +
            'or remove the extra path',
          { file: dir },
        );
      }
      seen.set(identity, dir);
      try {
        taken.push(lockDirectory(real, command, 'table directory'));
      } catch (err) {
        // No file can be made or removed in a directory this process may not write to, so no
        // run of its can change that table: it needs no lock, and its SSTables fail on their own
        // with what to fix. A lock already there that cannot be read is still a lock.
        if (!cannotWrite(err) || exists(path.join(real, LOCK_NAME))) throw err;
      }
    }
  } catch (err) {
    release();
    throw err;
  }
  return { release };
}

function cannotWrite(err: unknown): boolean {
  const code = ((err as { cause?: NodeJS.ErrnoException }).cause ?? {}).code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS';
}

function lockDirectory(dir: string, command: string, what: string): DirectoryLock {
  const file = path.join(dir, LOCK_NAME);
  const mine =
    JSON.stringify({
      pid: process.pid,
      host: os.hostname(),
      command,
      since: new Date().toISOString(),
    } satisfies Holder) + '\n';

  for (let attempt = 0; ; attempt++) {
    if (createWith(file, mine)) break;
    const seen = readIfExists(file);
    // Released meanwhile: try again (a lock that comes and goes this often is still a lock).
    if (seen === undefined && attempt < 100) continue;
    if (seen === undefined) {
      throw new TdeError(
        'ERR_TDE_LOCKED',
        `${what} ${dir} is locked and unlocked again and again by others; try again later`,
        { file },
      );
    }
    const holder = parseHolder(seen);
    if (stale(holder) && attempt < 10) {
      breakStale(file, seen);
      continue;
    }
    if (holder.pid === undefined || holder.host === undefined) {
      throw new TdeError(
        'ERR_TDE_LOCKED',
        `${what} ${dir} is locked, but ${file} ` +
          'does not say by which process (it is damaged, or not a lock sstable-tde wrote); if no ' +
          `sstable-tde command is running on this ${what}, remove ${file}`,
        { file },
      );
    }
    throw new TdeError(
      'ERR_TDE_LOCKED',
      `${what} ${dir} is locked by process ${holder.pid} on host ` +
        `${holder.host} (${holder.command ?? 'unknown command'}, since ${holder.since ?? '?'}); ` +
        `wait for it to finish, or if that process no longer runs, remove ${file}`,
      { file },
    );
  }

  sweepTemps(dir);

  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    heldLocks.delete(release);
    // Remove only our own lock, never one that replaced it. If that fails, the lock left names
    // this process, which is gone by the next run, so that run takes it over: no reason to fail
    // a command whose work is done.
    try {
      if (readIfExists(file) === mine) fs.rmSync(file, { force: true });
    } catch {
      // see above
    }
  };
  releaseAtExit(release);
  return { release };
}

/** The process holding a data or table directory's lock, if a live one does (for verify). */
export function lockHolder(dir: string): Partial<Holder> | undefined {
  const text = readIfExists(path.join(dir, LOCK_NAME));
  if (text === undefined) return undefined;
  const holder = parseHolder(text);
  return stale(holder) ? undefined : holder;
}
