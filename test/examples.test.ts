/**
 * examples/: the storage-process example runs as its own process against the built package
 * (npm test builds it first) and does what it says.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import test from 'ava';

import { parseCompressionInfo } from '../src/sstable/compression-info';
import { ROOT, tempDir } from './helpers';

const EXAMPLE = path.join(ROOT, 'examples', 'storage-process.js');

test(
  'the storage-process example flushes, reads by position, rotates its key and still reads ' +
    'the old SSTable',
  async (t) => {
    const dir = tempDir('example');
    const run = promisify(execFile);
    const { stdout, stderr } = await run(process.execPath, [EXAMPLE, '--dir', dir], { cwd: ROOT });
    t.is(stderr, '');
    const lines = stdout.trim().split('\n');
    const readOld = 'read 25 partitions of nb-1-big by position: all match';
    t.regex(
      lines[0],
      new RegExp(
        '^flushed 3000 partitions to nb-1-big \\(\\d+ bytes of data, ' +
          '\\d+ chunks, encrypted with system_key\\): Data\\.db, CompressionInfo\\.db, ' +
          'Digest\\.crc32, Index\\.db$',
      ),
    );
    t.is(lines[1], readOld);
    t.true(
      lines.includes('event keyRotated: system_key -> system_key-2 (AES/CBC/PKCS5Padding 128)'),
    );
    t.true(lines.includes("rotated the table's key: system_key -> system_key-2"));
    const second = /^flushed 2000 partitions to nb-2-big .*encrypted with system_key-2\)/;
    t.true(lines.some((l) => second.test(l)));
    t.is(lines.filter((l) => l === readOld).length, 2, 'the old SSTable is read before and after');
    t.true(lines.includes('the SSTable written before the rotation still reads with its own key'));
    t.true(lines.includes('  integrity failures 0'));

    // What it left on disk: encrypted data and index, each SSTable naming its own key.
    const table = path.join(dir, 'data', 'shop', 'users');
    for (const generation of [1, 2]) {
      for (const component of ['Data.db', 'Index.db']) {
        const bytes = fs.readFileSync(path.join(table, `nb-${generation}-big-${component}`));
        t.false(
          bytes.includes(Buffer.from('user:')),
          `${component} holds no partition key in plain`,
        );
      }
    }
    const keyOf = (generation: number) => {
      const file = path.join(table, `nb-${generation}-big-CompressionInfo.db`);
      return parseCompressionInfo(fs.readFileSync(file), file, true).options.system_key_file;
    };
    t.deepEqual([keyOf(1), keyOf(2)], ['system_key', 'system_key-2']);
    t.deepEqual(fs.readdirSync(path.join(dir, 'keys')).sort(), ['system_key', 'system_key-2']);
  },
);
