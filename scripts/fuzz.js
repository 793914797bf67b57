#!/usr/bin/env node
/**
 * The long fuzz run: test/fuzz.test.ts with every property's run count multiplied.
 *
 *   node scripts/fuzz.js            100 times the runs npm test makes (about 1.1 million inputs,
 *                                   some minutes)
 *   node scripts/fuzz.js 20         20 times
 *   FUZZ_SEED=123 node scripts/fuzz.js   replay with a seed that fast-check printed
 *
 * Extra arguments after the scale go to ava (for example `--match '*TTLV*'`).
 */
'use strict';

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);
const scale = args.length > 0 && /^\d+(\.\d+)?$/.test(args[0]) ? args.shift() : '100';

const r = spawnSync(
  process.execPath,
  [
    path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'),
    'test/fuzz.test.ts',
    '--timeout=60m',
    ...args,
  ],
  { cwd: root, stdio: 'inherit', env: { ...process.env, FUZZ_SCALE: scale } },
);
process.exit(r.status ?? 1);
