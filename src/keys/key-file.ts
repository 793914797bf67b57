/**
 * DSE's local system key files: one line per key, `ALG/MODE/PADDING:BITS:BASE64KEY`, mode 0600.
 * A file may hold several lines, one per cipher and strength.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CipherChoice, generateKey, normalizeKey, resolveCipher } from '../cipher/transformation';
import { fromSystem, TdeError } from '../errors';
import { syncDirectory, writeFullySync } from '../util/files';
import { looksLikeKey } from '../util/redact';

/** A path for a message, with any part that looks like key material left out. */
function shownPath(p: string): string {
  return p
    .split('/')
    .map((part) => (looksLikeKey(part) ? '(key-like name)' : part))
    .join('/');
}

export interface KeyFileEntry {
  /** The transformation as the line spells it, canonicalised. */
  transformation: string;
  algorithm: string;
  strength: number;
  key: Buffer;
}

/** Key files are a few lines; anything bigger is not a key file. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

export function formatKeyLine(choice: CipherChoice, key: Uint8Array): string {
  return `${choice.name}:${choice.strength}:${Buffer.from(key).toString('base64')}`;
}

/** Parses a key file's text; errors name the file and line but never echo key material. */
export function parseKeyFile(text: string, file: string): KeyFileEntry[] {
  const entries: KeyFileEntry[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `line ${i + 1} of key file ${file}`;
    const parts = line.split(':');
    if (parts.length !== 3 || !/^[A-Za-z0-9+/]+={0,2}$/.test(parts[2])) {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `${where} is not of the form ALG/MODE/PADDING:BITS:BASE64KEY; ` +
          'recreate the file with "sstable-tde createsystemkey" or restore it from a backup',
        { file },
      );
    }
    // No field of a key line is ever quoted back: with the fields in the wrong order, any of
    // them may be the key itself.
    let choice: CipherChoice;
    try {
      choice = resolveCipher(parts[0], parts[1]);
    } catch {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `${where}: the cipher or the strength is not valid (expected a JCE transformation such ` +
          'as AES/CBC/PKCS5Padding, then a key strength such as 128, then the base64 key)',
        { file },
      );
    }
    const decoded = Buffer.from(parts[2], 'base64');
    let key: Buffer;
    try {
      key = normalizeKey(choice, decoded);
    } catch {
      decoded.fill(0);
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `${where}: the key has ${decoded.length} bytes, but ` +
          `${choice.algorithm} ${choice.strength}-bit keys have ${choice.keyLength}; the file ` +
          'is damaged (cut short, or edited): restore it from a backup, since data encrypted ' +
          'under it can be read only with the same key',
        { file },
      );
    }
    entries.push({
      transformation: choice.name,
      algorithm: choice.algorithm,
      strength: choice.strength,
      key,
    });
  });
  if (entries.length === 0) {
    throw new TdeError(
      'ERR_TDE_KEY_FILE',
      `key file ${file} holds no key; recreate it with "sstable-tde createsystemkey" or restore ` +
        `it from a backup`,
      { file },
    );
  }
  return entries;
}

/**
 * Reads and parses a key file. Refuses one that group or others can read or write, since anyone
 * who can read the key can read every table it protects.
 */
export function readKeyFile(
  file: string,
  wanted?: { cipher: string; strength: number },
): KeyFileEntry[] {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO or device in place of the key file must not block the open; the
    // regular-file check below then refuses it.
    fd = fs.openSync(
      file,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
    );
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      // The command that makes the key, with the cipher the caller wants where it is known.
      const cipher = wanted ? `${wanted.cipher} ${wanted.strength}` : 'CIPHER STRENGTH';
      const create =
        `"sstable-tde createsystemkey ${cipher} ${shownPath(path.basename(file))} ` +
        `-d ${shownPath(path.dirname(file))}"`;
      if (!fs.existsSync(path.dirname(file))) {
        throw new TdeError(
          'ERR_TDE_KEY_FILE',
          `system key directory ${shownPath(path.dirname(file))} does not exist (looking for ` +
            `key file ${shownPath(path.basename(file))}): set system_key_directory (--config) to ` +
            `the directory that holds the key files, or make a new key there with ${create}`,
          { file },
        );
      }
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `system key file ${shownPath(file)} does not exist. Data already encrypted under it can ` +
          'be read only with that same file: restore it from a backup, or set ' +
          'system_key_directory (--config) to the directory that holds it. To encrypt new data ' +
          `under a new key, create it with ${create}`,
        { file },
      );
    }
    if (e.code === 'ELOOP') {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `system key file ${file} is a symbolic link, which is ` +
          'not followed (so a key file cannot be swapped behind a link); put the key file itself ' +
          'there',
        { file },
      );
    }
    throw fromSystem(err, file, 'open system key file');
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `system key file ${file} is not a regular file ` +
          `(it is a ${st.isDirectory() ? 'directory' : st.isFIFO() ? 'pipe' : 'special file'})`,
        { file },
      );
    }
    if ((st.mode & 0o077) !== 0) {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `system key file ${file} can be accessed by group or others (mode ` +
          `${(st.mode & 0o777).toString(8)}); restrict it with: chmod 600 ${file}`,
        { file },
      );
    }
    if (st.size > MAX_KEY_FILE_BYTES) {
      throw new TdeError(
        'ERR_TDE_KEY_FILE',
        `system key file ${file} is ${st.size} bytes, ` +
          `too large to be a key file (at most ${MAX_KEY_FILE_BYTES})`,
        { file },
      );
    }
    const buf = Buffer.alloc(st.size);
    let at = 0;
    while (at < buf.length) {
      const n = fs.readSync(fd, buf, at, buf.length - at, at);
      if (n === 0) break;
      at += n;
    }
    const text = buf.subarray(0, at).toString('utf8');
    buf.fill(0);
    return parseKeyFile(text, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Creates a new key file holding one freshly generated key. Refuses to overwrite an existing
 * file. The file is created with mode 0600 and synced, with its directory, before returning.
 */
export function createKeyFile(
  dir: string,
  name: string,
  transformation: string,
  strength: number | string,
): { file: string; choice: CipherChoice } {
  const choice = resolveCipher(transformation, strength);
  if (name === '' || name.includes('/') || name === '.' || name === '..') {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `key file name "${name}" must be a plain file name`,
    );
  }
  const file = path.join(dir, name);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw fromSystem(err, dir, 'create directory');
  }

  let fd: number;
  try {
    fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL,
      0o600,
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST' && fs.lstatSync(file).isSymbolicLink()) {
      throw new TdeError(
        'ERR_TDE_KEY_EXISTS',
        `${file} is a symbolic link; remove it or choose ` + 'another NAME',
        { file },
      );
    }
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new TdeError(
        'ERR_TDE_KEY_EXISTS',
        `key file ${file} already exists and is not overwritten: data encrypted with it would ` +
          'become unreadable. Choose another NAME, or move the file away first',
        { file },
      );
    }
    throw fromSystem(err, file, 'create key file');
  }

  const key = generateKey(choice);
  const line = Buffer.from(formatKeyLine(choice, key) + '\n');
  try {
    fs.fchmodSync(fd, 0o600); // the umask may have taken bits away, never added: make it exact
    writeFullySync(fd, line);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw fromSystem(err, file, 'write key file');
  } finally {
    key.fill(0);
    line.fill(0);
  }
  fs.closeSync(fd);
  syncDirectory(dir);
  return { file, choice };
}
