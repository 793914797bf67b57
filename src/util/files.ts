/** Small file-system helpers for writes that must survive a crash. */
import * as fs from 'node:fs';
import * as util from 'node:util';

import type { ChecksumType } from '../checksum';
import { ErrorCodeName, fromSystem, TdeError } from '../errors';
import { native } from '../native';

/** Whether a name exists, whatever it is (a dangling symbolic link counts). */
export function exists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Whether `p` leads to a directory (through links); false when it cannot be reached. */
export function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

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

/*
 * A write may store fewer bytes than asked and still succeed: when the disk fills up or the file
 * reaches the process's size limit (ulimit -f), write(2) stores what fits and only the next call
 * fails. The helpers below carry on after a short write, so that the cause is reported as an
 * error instead of a file silently cut short.
 */

/** A write that stored nothing without an error: not expected, but never loop on it. */
function stalled(): NodeJS.ErrnoException {
  return Object.assign(new Error('the write stored no bytes'), { code: 'EIO' });
}

/** fs.writeSync until every byte of `data` is written, at the file's position. */
export function writeFullySync(fd: number, data: Uint8Array): void {
  for (let at = 0; at < data.length;) {
    const n = fs.writeSync(fd, data, at, data.length - at);
    if (n <= 0) throw stalled();
    at += n;
  }
}

/** handle.write until every byte is written, from `position` on (or the file's position). */
export async function writeFully(
  handle: fs.promises.FileHandle,
  data: Uint8Array,
  position?: number,
): Promise<void> {
  for (let at = 0; at < data.length;) {
    const { bytesWritten } = await handle.write(
      data,
      at,
      data.length - at,
      position === undefined ? undefined : position + at,
    );
    if (bytesWritten <= 0) throw stalled();
    at += bytesWritten;
  }
}

/**
 * handle.writev until every buffer is written, from `position` on (or the file's position),
 * at most IOV_MAX (1024) buffers per call.
 */
export async function writevFully(
  handle: fs.promises.FileHandle,
  buffers: Uint8Array[],
  position?: number,
): Promise<void> {
  let rest = buffers.filter((b) => b.length > 0);
  let at = position;
  while (rest.length > 0) {
    const group = rest.slice(0, 1024);
    let { bytesWritten } = await handle.writev(group, at);
    if (bytesWritten <= 0) throw stalled();
    if (at !== undefined) at += bytesWritten;
    // Drop what was written: whole buffers, then the written part of the next one.
    let i = 0;
    while (i < group.length && bytesWritten >= group[i].length) bytesWritten -= group[i++].length;
    rest = rest.slice(i);
    if (bytesWritten > 0) rest[0] = rest[0].subarray(bytesWritten);
  }
}

/** Writes a whole file and fsyncs it. The caller syncs the directory, once for a set of files. */
export function writeFileDurably(file: string, data: string | Uint8Array, mode = 0o644): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'wx', 0o600);
    fs.fchmodSync(fd, mode);
    writeFullySync(fd, typeof data === 'string' ? Buffer.from(data) : data);
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

/**
 * Reads a file that must be a regular file of at most `maxBytes`: a path naming a FIFO or device
 * (or a file far too big for what it should be) is refused with `code` instead of blocking the
 * read or filling memory. `what` names the file in messages ("config file").
 */
export function readRegularFile(
  file: string,
  maxBytes: number,
  code: ErrorCodeName,
  what: string,
): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw fromSystem(err, file, `read ${what}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new TdeError(code, `${what} ${file} is not a regular file`, { file });
    if (st.size > maxBytes) {
      throw new TdeError(
        code,
        `${what} ${file} is ${st.size} bytes, more than a ${what} can ` +
          `plausibly be (at most ${maxBytes})`,
        { file },
      );
    }
    return fs.readFileSync(fd);
  } catch (err) {
    throw fromSystem(err, file, `read ${what}`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads exactly `length` bytes at `position` (into `buf` when given), carrying on after short
 * reads; a file that ends first is an error naming it, never a short result.
 */
export async function readFully(
  fd: fs.promises.FileHandle,
  file: string,
  position: number,
  length: number,
  buf: Buffer = Buffer.allocUnsafe(length),
): Promise<Buffer> {
  let at = 0;
  while (at < length) {
    let n: number;
    try {
      ({ bytesRead: n } = await fd.read(buf, at, length - at, position + at));
    } catch (err) {
      throw fromSystem(err, file, 'read');
    }
    if (n === 0) throw endedEarly(file, position + at, position, length);
    at += n;
  }
  return buf;
}

/** What a read of `file` after its handle was closed fails with, as FileHandle.read's does. */
export function readAfterClose(file: string): TdeError {
  return fromSystem(Object.assign(new Error('file closed'), { code: 'EBADF' }), file, 'read');
}

function endedEarly(file: string, at: number, position: number, length: number): TdeError {
  return new TdeError(
    'ERR_TDE_IO',
    `${file} ended at byte ${at} while ${length} bytes ` +
      `from ${position} were being read: was it truncated while in use?`,
    { file, offset: at },
  );
}

/**
 * As {@link readFully} into `into`, and the checksums of `spans` of the bytes read (offsets in
 * the region, ascending, not overlapping) and of them all, in one trip to the addon's thread
 * pool. The caller keeps `fd` open until it settles.
 */
export async function readChecked(
  fd: fs.promises.FileHandle,
  file: string,
  position: number,
  length: number,
  into: Buffer,
  spans: { offsets: Float64Array; lengths: Uint32Array },
  kind: ChecksumType,
): Promise<{ sums: Uint32Array; regionSum: number }> {
  // A FileHandle's descriptor is -1 once it is closed.
  if (fd.fd < 0) throw readAfterClose(file);
  let out: Uint32Array;
  try {
    out = await native().readChecked(
      fd.fd,
      position,
      length,
      into,
      spans.offsets,
      spans.lengths,
      kind,
    );
  } catch (err) {
    const e = err as { code?: string; errno?: number; index?: number; message: string };
    if (e.code !== 'ERR_TDE_IO' || e.index === undefined) throw err;
    if (!e.errno) throw endedEarly(file, e.index, position, length);
    const name = util.getSystemErrorName(-e.errno);
    const cause = Object.assign(new Error(`${name}: ${e.message}`), {
      code: name,
      errno: -e.errno,
      syscall: 'pread',
    });
    const failed = fromSystem(cause, file, 'read');
    failed.offset = e.index;
    throw failed;
  }
  const n = spans.offsets.length;
  return { sums: out.subarray(0, n), regionSum: out[n] };
}
