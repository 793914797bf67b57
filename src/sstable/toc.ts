/** TOC.txt: the component names of an SSTable, one per line (sstable-format.md §7). */
import * as fs from 'node:fs';

import { fromSystem } from '../errors';

export function readToc(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw fromSystem(err, file, 'read');
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

export function formatToc(components: string[]): string {
  return components.join('\n') + '\n';
}
