/** Small file-system helpers for writes that must survive a crash. */
import * as fs from 'node:fs';

import { fromSystem } from '../errors';

/** fsync a directory so that entries created, renamed or removed in it survive a crash. */
export function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.fsyncSync(fd);
  } catch (err) {
    throw fromSystem(err, dir, 'sync directory');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Writes a whole file and fsyncs it. The caller syncs the directory, once for a set of files. */
export function writeFileDurably(file: string, data: string | Uint8Array, mode = 0o644): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'wx', 0o600);
    fs.fchmodSync(fd, mode);
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } catch (err) {
    throw fromSystem(err, file, 'write');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Gives files the owner and group of `reference`, where this process may (as root); a rewrite
 * run by root must not leave a node's SSTables owned by root. Failures to chown are ignored: a
 * non-root process can only own its files, and that is then the right owner anyway.
 */
export function matchOwner(files: string[], reference: fs.Stats): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return;
  for (const f of files) {
    try {
      fs.chownSync(f, reference.uid, reference.gid);
    } catch {
      // see above
    }
  }
}
