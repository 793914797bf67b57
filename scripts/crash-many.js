#!/usr/bin/env node
/**
 * The long crash run: test/crash-ops.test.ts with every file-system operation of every scenario
 * as a kill point (several hundred), instead of the sample `npm test` takes.
 *
 *   node scripts/crash-many.js            kill each run once, at every operation
 *   node scripts/crash-many.js --twice    also kill the recovering run, early in its work
 *
 * Extra arguments go to ava (for example `--match '*rekey*'`). Exits with ava's status.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);
const twice = args.includes('--twice');
const rest = args.filter((a) => a !== '--twice');

const r = spawnSync(
  process.execPath,
  [
    path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'),
    'test/crash-ops.test.ts',
    '--timeout=10m',
    ...rest,
  ],
  {
    cwd: root,
    stdio: 'inherit',
    env: {
      ...process.env,
      SSTABLE_TDE_CRASH_OPS: 'all',
      SSTABLE_TDE_CRASH_TWICE: twice ? '1' : '0',
    },
  },
);
process.exit(r.status ?? 1);
