/**
 * A rewrite's transaction log: one small file in the table directory that says which SSTable a
 * rewrite adds and which it removes, and whether the new one was committed. It is what makes a
 * rewrite crash-safe:
 *
 *   1. the log is written (`add`, `remove`) and synced before any new file exists;
 *   2. the new SSTable is written, synced and verified;
 *   3. `commit` is appended and synced: from here on the new SSTable is the live one;
 *   4. the old SSTable's files are removed, then the log.
 *
 * Whatever moment a crash hits, the log tells which set is live: before `commit` the old one (the
 * new files are debris), after it the new one (the old files are debris). Readers in this package
 * apply that rule when listing a directory, and {@link recoverTable} removes the debris.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { fromSystem, TdeError } from '../errors';
import { COMPONENT_NAME } from '../sstable/components';
import { prefixOf, SSTableId } from '../sstable/descriptor';
import { readToc } from '../sstable/toc';
import { syncDirectory, writeFullySync } from '../util/files';

const HEADER = 'sstable-tde rewrite v1';
const LOG = /^sstable-tde-txn-(.+)\.log$/;
/** What `add` and `remove` name: one SSTable's prefix, never a part of several (`nb`). */
const PREFIX = /^[a-z]{2}-[0-9a-z_]{1,64}-(big|bti)$/;

export interface TxnState {
  file: string;
  /** Prefix of the SSTable being written, e.g. `nb-2-big`. */
  add?: string;
  /** Prefix of the SSTable it replaces. */
  remove?: string;
  committed: boolean;
  /**
   * Set, saying why for the operator, when nobody can tell whether the rewrite committed, and so
   * nothing may be removed: the log is not one this package wrote in full (its first line is
   * wrong) yet the SSTable its name says it adds exists (a log is synced before any new file
   * exists, so this is damage done later); or it records no commit, yet the SSTable it replaces
   * has lost files that only a committed rewrite removes.
   */
  damage?: string;
}

function appendDurably(file: string, text: string, create: boolean): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, create ? 'wx' : 'a', 0o644);
    writeFullySync(fd, Buffer.from(text));
    fs.fsyncSync(fd);
  } catch (err) {
    // A log this call created but could not complete (a full disk) names no rewrite: remove it
    // rather than leave it for the next run to find.
    if (create && fd !== undefined) {
      fs.closeSync(fd);
      fd = undefined;
      fs.rmSync(file, { force: true });
    }
    throw fromSystem(err, file, create ? 'create transaction log' : 'update transaction log');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export class RewriteTxn {
  private constructor(
    readonly file: string,
    readonly dir: string,
    /** The log's whole text as written so far. */
    private text: string,
  ) {}

  /**
   * Step 1: records the intent, before any new file is created. The log is read back: one that
   * named another SSTable would have a later recovery remove the wrong files.
   */
  static begin(oldId: SSTableId, newId: SSTableId): RewriteTxn {
    const file = path.join(newId.dir, `sstable-tde-txn-${prefixOf(newId)}.log`);
    const text = `${HEADER}\nadd ${prefixOf(newId)}\nremove ${prefixOf(oldId)}\n`;
    appendDurably(file, text, true);
    syncDirectory(newId.dir);
    const txn = new RewriteTxn(file, newId.dir, text);
    try {
      txn.checkReadsBack('its start', 'nothing was written');
    } catch (err) {
      txn.finish();
      throw err;
    }
    return txn;
  }

  /**
   * Step 3: the new SSTable becomes the live one. The log is read back before the caller removes
   * anything: a commit record that does not read back would have a crash soon after undo the
   * rewrite while the old SSTable is half gone. The caller then treats it as not committed.
   */
  commit(): void {
    appendDurably(this.file, 'commit\n', false);
    this.text += 'commit\n';
    this.checkReadsBack(
      'its commit record',
      'the rewrite is undone and the SSTable it replaces left as it was',
    );
  }

  private checkReadsBack(what: string, outcome: string): void {
    let back: string;
    try {
      back = fs.readFileSync(this.file, 'latin1');
    } catch (err) {
      throw fromSystem(err, this.file, 'read back transaction log');
    }
    if (back === this.text) return;
    throw new TdeError(
      'ERR_TDE_REWRITE_FAILED',
      `the transaction log ${this.file} does not read back as written after ${what}; ` +
        `${outcome}. A file that does not read back as just written points at the disk, its ` +
        'driver or memory: check the system log (dmesg) before running the command again',
      { file: this.file },
    );
  }

  /**
   * Whether the log, as it reads now, records the commit: what a reader or the next run would
   * decide. Used when commit() reported an error, which may come after its write succeeded.
   */
  readsCommitted(): boolean {
    return readTxns(this.dir).find((t) => t.file === this.file)?.committed ?? false;
  }

  /** Step 4's end, or after a rollback: the log is no longer needed. */
  finish(): void {
    try {
      fs.rmSync(this.file, { force: true });
    } catch (err) {
      throw fromSystem(err, this.file, 'remove transaction log');
    }
    syncDirectory(this.dir);
  }
}

/**
 * Reads every transaction log in a table directory. A torn or unreadable log counts as uncommitted.
 */
export function readTxns(dir: string): TxnState[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw fromSystem(err, dir, 'list directory');
  }
  const out: TxnState[] = [];
  for (const name of names) {
    if (!LOG.test(name)) continue;
    const file = path.join(dir, name);
    let lines: string[] = [];
    try {
      // Only complete lines count: a torn last line is ignored.
      const text = fs.readFileSync(file, 'utf8');
      lines = text.split('\n').slice(0, -1);
    } catch {
      // unreadable: treated as an uncommitted log with nothing known
    }
    const state: TxnState = { file, committed: false };
    const prefix = (p: string | undefined) => (p !== undefined && PREFIX.test(p) ? p : undefined);
    if (lines[0] === HEADER) {
      for (const line of lines.slice(1)) {
        if (line.startsWith('add ')) state.add = prefix(line.slice(4));
        else if (line.startsWith('remove ')) state.remove = prefix(line.slice(7));
        else if (line === 'commit') state.committed = Boolean(state.add && state.remove);
      }
    }
    // Fall back to the name for the added SSTable, which the log is named after: a log torn
    // while it was first written names an SSTable that was never started.
    state.add ??= prefix(LOG.exec(name)?.[1]);
    if (lines[0] !== HEADER && state.add !== undefined) {
      const started = `${state.add}-`;
      if (names.some((n) => n.startsWith(started)))
        state.damage = 'its first line is not one sstable-tde writes';
    }
    // A commit is only ever written once the new SSTable is complete, and nothing removes it
    // while the log exists: a committed log whose new Data.db is missing is damaged or came from
    // elsewhere, and must not remove the SSTable that is still the only copy of the data.
    if (state.committed && !fs.existsSync(path.join(dir, `${state.add}-Data.db`))) {
      state.committed = false;
    }
    // The mirror case: old files are only removed after the commit, so an uncommitted log whose
    // old SSTable has lost files while the new one is whole cannot be rolled back: that would
    // leave no complete copy. (A commit record that a disk lost after it was read back.)
    if (!state.committed && state.damage === undefined && state.remove && state.add) {
      const lost = lostFiles(dir, names, state.remove);
      if (lost && fs.existsSync(path.join(dir, `${state.add}-Data.db`))) {
        state.damage =
          `it does not record a commit, yet ${state.remove} has lost ${lost}, which only a ` +
          'committed rewrite removes';
      }
    }
    out.push(state);
  }
  return out;
}

/**
 * What an SSTable has lost, or undefined when it is whole: all its files, the components its
 * TOC.txt lists that are gone, or (with no readable TOC.txt) its Data.db. Removal takes TOC.txt
 * last, so a set being removed keeps it until the very end.
 */
function lostFiles(dir: string, names: string[], prefix: string): string | undefined {
  if (!names.some((n) => n.startsWith(`${prefix}-`))) return 'all its files';
  let listed: string[];
  try {
    listed = readToc(path.join(dir, `${prefix}-TOC.txt`)).filter((c) => COMPONENT_NAME.test(c));
  } catch {
    listed = ['Data.db'];
  }
  const lost = listed.filter((c) => !names.includes(`${prefix}-${c}`));
  return lost.length > 0 ? lost.join(', ') : undefined;
}

/** SSTable prefixes in `dir` that an interrupted rewrite left as debris: not live. */
export function debrisPrefixes(dir: string): Set<string> {
  const out = new Set<string>();
  for (const t of readTxns(dir)) {
    const dead = t.committed ? t.remove : t.add;
    if (dead && t.damage === undefined) out.add(dead);
  }
  return out;
}

export interface Recovery {
  log: string;
  /** `rolled back` (the new SSTable was not committed) or `completed` (the old one is removed). */
  action: 'rolled back' | 'completed';
  removed: string;
}

/**
 * Finishes or undoes every interrupted rewrite in a table directory. Damaged logs are left as
 * they are, with every SSTable they might concern: they are the operator's to settle.
 */
export function recoverTable(dir: string): Recovery[] {
  const done: Recovery[] = [];
  for (const t of readTxns(dir)) {
    if (t.damage !== undefined) continue;
    const dead = t.committed ? t.remove : t.add;
    if (dead) removeSSTableFiles(dir, dead);
    syncDirectory(dir);
    fs.rmSync(t.file, { force: true });
    syncDirectory(dir);
    done.push({
      log: t.file,
      action: t.committed ? 'completed' : 'rolled back',
      removed: dead ?? '',
    });
  }
  return done;
}

/**
 * Removes every file of one SSTable. TOC.txt goes last, so a half-removed set is never listed
 * whole. `afterFirst` runs once the first file is gone (crash tests use it).
 */
export function removeSSTableFiles(dir: string, prefix: string, afterFirst?: () => void): void {
  const files = fs.readdirSync(dir).filter((n) => n.startsWith(`${prefix}-`));
  files.sort((a, b) => Number(a.endsWith('TOC.txt')) - Number(b.endsWith('TOC.txt')));
  for (const name of files) {
    const file = path.join(dir, name);
    try {
      // unlink rather than rm: rm reports a refused unlink (EPERM) as ENOTDIR, its rmdir retry.
      fs.unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystem(err, file, 'remove');
    }
    if (name === files[0]) afterFirst?.();
  }
}
