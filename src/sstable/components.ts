/**
 * Checks that an SSTable's files agree with its TOC.txt before anything relies on them: every
 * listed component exists as a regular file this process can open, those that always have
 * content are not empty, and TOC.txt itself is readable text. A rewrite
 * must not carry a damaged TOC or a hole in the component set into a new SSTable.
 */
import * as fs from 'node:fs';

import { fromSystem, TdeError } from '../errors';
import { componentPath, displayName, SSTableFiles } from './descriptor';
import { readToc } from './toc';

/** What a component name in TOC.txt may be. */
export const COMPONENT_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** Components with content in every SSTable that has data (Index.db: big; Partitions.db: bti). */
const NEVER_EMPTY = ['Statistics.db', 'Index.db', 'Summary.db', 'Partitions.db'];

/** Throws a TdeError naming the first problem; returns the TOC's components (or the files'). */
export function checkComponents(files: SSTableFiles): string[] {
  const sizes = new Map<string, number>();
  for (const c of files.components) {
    const file = componentPath(files, c);
    // Opened, not only looked at: one this process cannot read would pass verify, which reads
    // plain index components no further, and then fail the rewrite that copies it. O_NONBLOCK:
    // a FIFO in a component's place must not block the open; it is refused below.
    let st: fs.Stats;
    try {
      const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        st = fs.fstatSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      // A socket cannot be opened at all.
      if ((err as NodeJS.ErrnoException).code === 'ENXIO') throw notAFile(files, file, false);
      throw fromSystem(err, file, 'open');
    }
    if (!st.isFile()) throw notAFile(files, file, st.isDirectory());
    sizes.set(c, st.size);
  }
  // An SSTable with data always has content in these; an empty one was cut off or zeroed.
  if ((sizes.get('Data.db') ?? 0) > 0) {
    const empty = NEVER_EMPTY.find((c) => sizes.get(c) === 0);
    if (empty !== undefined) {
      const file = componentPath(files, empty);
      throw new TdeError(
        'ERR_TDE_MISSING_COMPONENT',
        `${file} is empty, though an SSTable with data always has content there; restore the ` +
          `SSTable ${displayName(files)} from a backup or snapshot`,
        { file },
      );
    }
  }
  if (!files.components.includes('TOC.txt')) return files.components;

  const tocFile = componentPath(files, 'TOC.txt');
  const toc = readToc(tocFile);
  const bad = toc.find((c) => !COMPONENT_NAME.test(c));
  if (bad !== undefined || toc.length === 0) {
    throw new TdeError(
      'ERR_TDE_CORRUPT_TOC',
      `${tocFile} is damaged (${
        toc.length === 0 ? 'it is empty' : 'it holds a line that is not a component name'
      }); restore it from a backup, or rewrite it to ` +
        `list the components present: ${files.components.join(', ')}`,
      { file: tocFile },
    );
  }
  const missing = toc.filter((c) => !files.components.includes(c));
  if (missing.length > 0) {
    throw new TdeError(
      'ERR_TDE_MISSING_COMPONENT',
      `SSTable ${displayName(files)} lacks ` +
        `${missing.join(', ')}, which its TOC.txt lists; restore ` +
        `${missing.length > 1 ? 'them' : 'it'} from a backup or snapshot`,
      { file: componentPath(files, missing[0]) },
    );
  }
  return toc;
}

function notAFile(files: SSTableFiles, file: string, directory: boolean): TdeError {
  return new TdeError(
    'ERR_TDE_MISSING_COMPONENT',
    `${file} is not a regular file (it is a ${directory ? 'directory' : 'special file'}); ` +
      `the SSTable ${displayName(files)} cannot be used until it is restored`,
    { file },
  );
}
