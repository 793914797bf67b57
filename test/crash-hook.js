/**
 * A preload (`node --require test/crash-hook.js`) for crash tests: it counts the file-system
 * operations that change something (create, write, sync, link, rename, remove, chmod, ...) on
 * paths under one directory, and kills the process just before the N-th of them. Counting real
 * operations reaches every phase of a rewrite, including moments no named crash point marks:
 * between two writes of one file, between a file's write and its fsync, between two removals.
 *
 * The operations themselves are the real ones, unchanged; the hook only decides when to stop.
 *
 * Environment (the hook does nothing unless SSTABLE_TDE_FS_ROOT is set):
 *   SSTABLE_TDE_FS_ROOT      count only operations on paths under this directory (and on file
 *                            descriptors opened there); tsx's cache, temp files etc. are ignored
 *   SSTABLE_TDE_FS_TRACE     append one line per counted operation: "N kind path"
 *   SSTABLE_TDE_KILL_AT_OP   send SIGKILL to this process just before operation N (1-based)
 *   SSTABLE_TDE_STOP_AT_OP   send SIGSTOP instead (the parent resumes it with SIGCONT)
 *   SSTABLE_TDE_STOP_AT_MATCH  send SIGSTOP before the first operation whose "kind path" line
 *                            matches this regular expression
 *   SSTABLE_TDE_FAIL_AT_OP   make operation N fail, as a failing disk would, with the errno
 *                            SSTABLE_TDE_FAIL_CODE (default EIO), without doing it
 *   SSTABLE_TDE_FAIL_MATCH   make every operation whose "kind path" line matches this regular
 *                            expression fail the same way (e.g. links refused with EPERM)
 *   SSTABLE_TDE_GARBLE_MATCH  the first write whose "kind path" line matches this regular
 *                            expression (handle.write, handle.writev, handle.writeFile, write,
 *                            writev; copyFile changes the copy once made) stores its data with
 *                            one byte changed and reports success, as a disk, driver or bad
 *                            memory that corrupts data silently would; the caller's own buffers
 *                            are left as they were
 *   SSTABLE_TDE_GARBLE_SKIP  let this many matching writes through untouched before garbling
 *
 * Only calls made through Node's fs module are seen; file I/O done in native code is not.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const rootEnv = process.env.SSTABLE_TDE_FS_ROOT;
if (rootEnv) install(path.resolve(rootEnv));

function install(root) {
  const traceFile = process.env.SSTABLE_TDE_FS_TRACE;
  const killAt = Number(process.env.SSTABLE_TDE_KILL_AT_OP || 0);
  const stopAt = Number(process.env.SSTABLE_TDE_STOP_AT_OP || 0);
  const stopMatch = process.env.SSTABLE_TDE_STOP_AT_MATCH
    ? new RegExp(process.env.SSTABLE_TDE_STOP_AT_MATCH)
    : undefined;
  let stopped = false;
  const failAt = Number(process.env.SSTABLE_TDE_FAIL_AT_OP || 0);
  const failCode = process.env.SSTABLE_TDE_FAIL_CODE || 'EIO';
  const failMatch = process.env.SSTABLE_TDE_FAIL_MATCH
    ? new RegExp(process.env.SSTABLE_TDE_FAIL_MATCH)
    : undefined;
  const garbleMatch = process.env.SSTABLE_TDE_GARBLE_MATCH
    ? new RegExp(process.env.SSTABLE_TDE_GARBLE_MATCH)
    : undefined;
  let garbled = false;
  let garbleSkip = Number(process.env.SSTABLE_TDE_GARBLE_SKIP || 0);
  /** Whether this write is the one to garble (the first that matches, and only it). */
  const toGarble = (kind, target) => {
    if (!garbleMatch || garbled || !garbleMatch.test(`${kind} ${path.relative(root, target)}`))
      return false;
    if (garbleSkip-- > 0) return false;
    garbled = true;
    return true;
  };
  const original = { appendFileSync: fs.appendFileSync };
  /** Paths of descriptors opened under the root, by descriptor. */
  const fds = new Map();
  let count = 0;
  /** Set while a counted call runs: calls it makes itself (rmSync's unlink) are not counted. */
  let inside = false;

  const under = (p) => {
    if (typeof p !== 'string' && !Buffer.isBuffer(p) && !(p instanceof URL)) return false;
    const abs = path.resolve(p instanceof URL ? p.pathname : String(p));
    return abs === root || abs.startsWith(root + path.sep);
  };

  /** Counts an operation; returns the error it must fail with, if it is the one to fail. */
  function step(kind, target) {
    if (inside) return undefined;
    count++;
    const line = `${kind} ${path.relative(root, target) || '.'}`;
    if (traceFile) original.appendFileSync(traceFile, `${count} ${line}\n`);
    if (count === killAt) process.kill(process.pid, 'SIGKILL');
    if (count === stopAt || (stopMatch && !stopped && stopMatch.test(line))) {
      stopped = true;
      process.kill(process.pid, 'SIGSTOP');
    }
    if (count !== failAt && !(failMatch && failMatch.test(line))) return undefined;
    const err = new Error(
      `${failCode}: i/o error (injected by crash-hook.js), ${kind} '${target}'`,
    );
    return Object.assign(err, {
      code: failCode,
      errno: -(os.constants.errno[failCode] || 5),
      syscall: kind,
      path: target,
    });
  }
  const failSync = (err) => {
    if (err) throw err;
  };

  const nested = (call) => {
    if (inside) return call();
    inside = true;
    try {
      return call();
    } finally {
      inside = false;
    }
  };

  const writes = (flags) => {
    if (typeof flags === 'number') {
      const c = fs.constants;
      return (flags & (c.O_WRONLY | c.O_RDWR | c.O_CREAT | c.O_TRUNC | c.O_APPEND)) !== 0;
    }
    return typeof flags === 'string' && /[wax+]/.test(flags);
  };

  // Operations named by their first argument, a path (two-path ones by the second, the target).
  const byPath = [
    'writeFileSync',
    'appendFileSync',
    'rmSync',
    'unlinkSync',
    'rmdirSync',
    'mkdirSync',
    'chmodSync',
    'chownSync',
    'truncateSync',
    'utimesSync',
  ];
  const byTarget = ['renameSync', 'linkSync', 'copyFileSync', 'symlinkSync'];
  const byFd = [
    'writeSync',
    'writevSync',
    'fsyncSync',
    'fdatasyncSync',
    'ftruncateSync',
    'fchmodSync',
    'fchownSync',
    'futimesSync',
  ];

  for (const name of byPath) {
    const fn = fs[name];
    fs[name] = function (p, ...rest) {
      if (!under(p)) return fn.call(this, p, ...rest);
      failSync(step(name.replace(/Sync$/, ''), String(p)));
      return nested(() => fn.call(this, p, ...rest));
    };
  }
  for (const name of byTarget) {
    const fn = fs[name];
    fs[name] = function (from, to, ...rest) {
      if (!under(to)) return fn.call(this, from, to, ...rest);
      const kind = name.replace(/Sync$/, '');
      failSync(step(kind, String(to)));
      const out = nested(() => fn.call(this, from, to, ...rest));
      if (kind === 'copyFile' && toGarble(kind, String(to))) nested(() => garbleFile(String(to)));
      return out;
    };
  }
  for (const name of byFd) {
    const fn = fs[name];
    fs[name] = function (fd, ...rest) {
      if (!fds.has(fd)) return fn.call(this, fd, ...rest);
      const kind = name.replace(/Sync$/, '');
      failSync(step(kind, fds.get(fd)));
      const args = toGarble(kind, fds.get(fd)) ? garble(kind, rest) : rest;
      return nested(() => fn.call(this, fd, ...args));
    };
  }
  const openSync = fs.openSync;
  fs.openSync = function (p, flags, ...rest) {
    const counted = under(p);
    if (counted && writes(flags)) failSync(step('open-for-write', String(p)));
    const fd = openSync.call(this, p, flags, ...rest);
    if (counted) fds.set(fd, String(p));
    return fd;
  };
  const closeSync = fs.closeSync;
  fs.closeSync = function (fd) {
    fds.delete(fd);
    return closeSync.call(this, fd);
  };

  // Promise API: path operations, and the methods of file handles opened under the root.
  const p = fs.promises;
  for (const name of [
    'writeFile',
    'appendFile',
    'rm',
    'unlink',
    'rmdir',
    'mkdir',
    'chmod',
    'chown',
    'truncate',
  ]) {
    const fn = p[name];
    p[name] = function (target, ...rest) {
      const err = under(target) ? step(name, String(target)) : undefined;
      return err ? Promise.reject(err) : fn.call(this, target, ...rest);
    };
  }
  for (const name of ['rename', 'link', 'copyFile', 'symlink']) {
    const fn = p[name];
    p[name] = function (from, to, ...rest) {
      const err = under(to) ? step(name, String(to)) : undefined;
      return err ? Promise.reject(err) : fn.call(this, from, to, ...rest);
    };
  }
  const handlePaths = new WeakMap();
  let patchedHandles = false;
  const patchHandles = (proto) => {
    patchedHandles = true;
    for (const name of [
      'write',
      'writev',
      'writeFile',
      'appendFile',
      'sync',
      'datasync',
      'truncate',
      'chmod',
      'chown',
      'utimes',
    ]) {
      const fn = proto[name];
      proto[name] = function (...args) {
        const target = handlePaths.get(this);
        const err = target !== undefined ? step(`handle.${name}`, target) : undefined;
        if (err) return Promise.reject(err);
        const garbling = target !== undefined && toGarble(`handle.${name}`, target);
        return fn.apply(this, garbling ? garble(name, args) : args);
      };
    }
  };
  const open = p.open;
  p.open = async function (target, flags, ...rest) {
    const counted = under(target);
    if (counted && writes(flags)) failSync(step('open-for-write', String(target)));
    const handle = await open.call(this, target, flags, ...rest);
    if (!patchedHandles) patchHandles(Object.getPrototypeOf(handle));
    if (counted) handlePaths.set(handle, String(target));
    return handle;
  };
}

/**
 * The arguments of a write (handle.write/writev/writeFile, or fs.writeSync/writevSync after the
 * descriptor) with one byte of its data changed, in a copy: the middle byte of what write would
 * store, of writev's largest buffer, or of writeFile's data.
 */
function garble(name, args) {
  const flipped = (bytes, at) => {
    const copy = Buffer.from(bytes);
    copy[at] ^= 0x5a;
    return copy;
  };
  if (name === 'write' && typeof args[0] === 'string') {
    // write(string, position?, encoding?): the same bytes as a buffer.
    const bytes = Buffer.from(args[0], typeof args[2] === 'string' ? args[2] : 'utf8');
    if (bytes.length === 0) return args;
    const position = typeof args[1] === 'number' ? args[1] : null;
    return [flipped(bytes, bytes.length >> 1), 0, bytes.length, position];
  }
  if (name === 'write' && ArrayBuffer.isView(args[0])) {
    const data = Buffer.from(args[0].buffer, args[0].byteOffset, args[0].byteLength);
    // write(buffer, offset?, length?, position?) or write(buffer, { offset, length, position })
    const options = args[1] !== null && typeof args[1] === 'object' ? args[1] : undefined;
    const offset = (options ? options.offset : args[1]) ?? 0;
    const length = (options ? options.length : args[2]) ?? data.length - offset;
    if (length <= 0) return args;
    return [flipped(data, offset + (length >> 1)), ...args.slice(1)];
  }
  if (name === 'writev' && Array.isArray(args[0]) && args[0].length > 0) {
    const buffers = [...args[0]];
    let big = 0;
    buffers.forEach((b, i) => (b.length > buffers[big].length ? (big = i) : 0));
    if (buffers[big].length === 0) return args;
    buffers[big] = flipped(buffers[big], buffers[big].length >> 1);
    return [buffers, ...args.slice(1)];
  }
  if (name === 'writeFile' && args[0] !== undefined && args[0].length > 0) {
    const encoding = typeof args[1] === 'string' ? args[1] : args[1]?.encoding;
    const data =
      typeof args[0] === 'string' ? Buffer.from(args[0], encoding) : Buffer.from(args[0]);
    return [flipped(data, data.length >> 1), ...args.slice(1)];
  }
  return args;
}

/** Changes the middle byte of a file in place (a copy that came out wrong). */
function garbleFile(file) {
  const fd = fs.openSync(file, 'r+');
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return;
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, size >> 1);
    byte[0] ^= 0x5a;
    fs.writeSync(fd, byte, 0, 1, size >> 1);
  } finally {
    fs.closeSync(fd);
  }
}
