#!/usr/bin/env node
/**
 * Offline rewrite throughput and memory, measured in one run against the same tool without
 * encryption: a generated SSTable (bench/lib/sstable-gen.js: real corpus partitions and chunks,
 * LZ4, about 2:1) is rewritten
 *
 *   LZ4 -> LZ4                                   the baseline: same work but the cipher
 *   LZ4 -> EncryptingLZ4Compressor AES-128-CBC   on every core
 *   LZ4 -> EncryptingLZ4Compressor AES-128-CBC   pinned to one core (taskset), the serial baseline
 *
 * then verified (LZ4 and encrypted). Each run is a fresh process over hard links of the same
 * source files, with the page cache warm and `sync` run before it; the time includes fsync and
 * the full read-back check that every rewrite does. Each case runs three times and the median
 * counts. Sizes: 64 MiB, 512 MiB and 4 GiB (--quick: 64 MiB; --sizes 64,512
 * in MiB). Prints a table, then one JSON document.
 *
 *   node bench/rewrite.js [--quick] [--sizes LIST] [--json FILE] [--keep]
 */
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const tde = require('../dist');
const { makeSSTable } = require('./lib/sstable-gen');

const { cores, line, main, result } = require('./lib/common');

const MiB = 1024 * 1024;
const CHILD = path.join(__dirname, 'lib', 'rewrite-child.js');

const work = path.join(os.tmpdir(), 'sstable-tde-bench-rewrite');
const keyDir = path.join(work, 'keys');

function hasTaskset() {
  return spawnSync('taskset', ['-c', '0', 'true']).status === 0;
}

/** Fresh data directory whose table holds hard links to the pristine SSTable's files. */
function stage(pristine, name) {
  const dir = path.join(work, name, 'bench', 'big');
  fs.rmSync(path.join(work, name), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(pristine)) {
    if (f.startsWith('.')) continue;
    fs.linkSync(path.join(pristine, f), path.join(dir, f));
  }
  return path.join(work, name);
}

function child(childArgs, { oneCore = false } = {}) {
  const cmd = oneCore ? 'taskset' : process.execPath;
  const argv = oneCore ? ['-c', '0', process.execPath, CHILD, ...childArgs] : [CHILD, ...childArgs];
  const env = oneCore
    ? { ...process.env, SSTABLE_TDE_THREADS: '1', UV_THREADPOOL_SIZE: '1' }
    : process.env;
  const out = execFileSync(cmd, argv, { env, encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').pop());
}

function schemaFile(name, compression) {
  const file = path.join(work, `${name}.cql`);
  fs.writeFileSync(file, `ALTER TABLE bench.big WITH compression = ${compression};\n`);
  return file;
}

async function run({ quick = false, args = [], log = () => {} } = {}) {
  const arg = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const sizes = (arg('--sizes') ?? (quick ? '64' : '64,512,4096'))
    .split(',')
    .map((s) => Number(s) * MiB);
  fs.mkdirSync(work, { recursive: true });
  fs.rmSync(keyDir, { recursive: true, force: true });
  fs.mkdirSync(keyDir, { mode: 0o700 });
  tde.createKeyFile(keyDir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  const plainSchema = schemaFile('lz4', "{'class': 'LZ4Compressor', 'chunk_length_kb': 64}");
  const encSchema = schemaFile(
    'enc',
    "{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': " +
      "'AES/CBC/PKCS5Padding', 'secret_key_strength': 128, 'chunk_length_kb': 64}",
  );
  const oneCore = hasTaskset();
  const cases = [];
  log(
    `\n== offline rewrite: ${cores()} cores${oneCore ? '' : ' (no taskset: no 1-core baseline)'}\n`,
  );

  try {
    for (const size of sizes) {
      const label = size >= 1024 * MiB ? `${size / 1024 / MiB} GiB` : `${size / MiB} MiB`;
      const pristine = await makeSSTable(path.join(work, 'pristine'), size);
      const stored = fs.statSync(path.join(pristine, 'nb-1-big-Data.db')).size;
      log(
        `   ${label}: ${(size / stored).toFixed(2)}:1 under LZ4, Data.db ` +
          `${(stored / MiB).toFixed(0)} MiB\n`,
      );

      // Each case runs three times on fresh hard links, after `sync` so that no earlier run's
      // writeback competes with it; the median time counts, and the highest peak memory. (Run
      // once, the first 4 GiB case after the SSTable was made sometimes took twice as long as
      // its reruns, whichever case it was.)
      const reps = 3;
      const rewrite = (schema, opts) => {
        const runs = [];
        let dir;
        for (let r = 0; r < reps; r++) {
          if (dir) fs.rmSync(dir, { recursive: true, force: true });
          dir = stage(pristine, `run${r}`);
          spawnSync('sync');
          runs.push(child(['upgrade', dir, schema, keyDir], opts));
        }
        return { ...summarize(runs), dir };
      };
      const verify = (dir) =>
        summarize(Array.from({ length: reps }, () => child(['verify', dir, keyDir])));
      const summarize = (runs) => {
        const seconds = runs.map((r) => r.seconds).sort((a, b) => a - b)[runs.length >> 1];
        return {
          mbps: size / seconds / 1e6,
          seconds,
          maxRssMiB: Math.max(...runs.map((r) => r.maxRssMiB)),
        };
      };
      const extra = (m) => ({
        bytes: size,
        seconds: Math.round(m.seconds * 1000) / 1000,
        maxRssMiB: Math.round(m.maxRssMiB * 10) / 10,
        runs: reps,
      });

      const plain = rewrite(plainSchema);
      const verifyPlain = verify(plain.dir);
      fs.rmSync(plain.dir, { recursive: true, force: true });
      const enc = rewrite(encSchema);
      const verifyEnc = verify(enc.dir);
      fs.rmSync(enc.dir, { recursive: true, force: true });
      const one = oneCore ? rewrite(encSchema, { oneCore: true }) : undefined;
      if (one) fs.rmSync(one.dir, { recursive: true, force: true });

      // The work alone (no file written), on every core and on one; and the file system alone:
      // as many bytes as the encrypted Data.db written to a new file, then fsync.
      const source = stage(pristine, 'compute');
      const times = (verb, opts) =>
        summarize(
          Array.from({ length: reps }, () => {
            spawnSync('sync');
            return child(
              verb === 'compute' ? ['compute', source, keyDir] : ['write', source, String(stored)],
              opts,
            );
          }),
        );
      const busy = times('compute');
      const workOne = oneCore ? times('compute', { oneCore: true }) : undefined;
      const io = times('write');
      fs.rmSync(source, { recursive: true, force: true });

      const plainName = `rewrite LZ4 -> LZ4, ${label}`;
      const oneName = `rewrite LZ4 -> EncryptingLZ4 AES-128-CBC, 1 core, ${label}`;
      const group = [
        result('rewrite', plainName, plain.mbps, null, undefined, extra(plain)),
        result(
          'rewrite',
          `rewrite LZ4 -> EncryptingLZ4 AES-128-CBC, ${label}`,
          enc.mbps,
          { name: plainName, mbps: plain.mbps },
          0.9,
          {
            ...extra(enc),
            ...(size >= 4096 * MiB
              ? { memoryTarget: { maxRssMiB: 200, met: enc.maxRssMiB < 200 } }
              : {}),
          },
        ),
      ];
      if (one) {
        group.push(result('rewrite', oneName, one.mbps, null, undefined, extra(one)));
        group.push(
          result(
            'rewrite',
            `rewrite LZ4 -> EncryptingLZ4 AES-128-CBC, all cores vs 1, ${label}`,
            enc.mbps,
            { name: oneName, mbps: one.mbps },
            1.7,
            extra(enc),
          ),
        );
      }
      const ioName =
        `file system: ${(stored / MiB).toFixed(0)} MiB to a new file + fsync (as ` +
        `MB/s of data), ${label}`;
      group.push(result('rewrite', ioName, io.mbps, null, undefined, extra(io)));
      group.push(
        result(
          'rewrite',
          `rewrite LZ4 -> EncryptingLZ4 AES-128-CBC against the file system alone, ${label}`,
          enc.mbps,
          { name: ioName, mbps: io.mbps },
          undefined,
          extra(enc),
        ),
      );
      const workName = `rewrite work without file writes, 1 core, ${label}`;
      if (workOne)
        group.push(result('rewrite', workName, workOne.mbps, null, undefined, extra(workOne)));
      group.push(
        result(
          'rewrite',
          `rewrite work without file writes, all cores, ${label}`,
          busy.mbps,
          workOne ? { name: workName, mbps: workOne.mbps } : null,
          workOne ? 1.7 : undefined,
          extra(busy),
        ),
      );
      group.push(
        result(
          'rewrite',
          `verify LZ4, ${label}`,
          verifyPlain.mbps,
          null,
          undefined,
          extra(verifyPlain),
        ),
      );
      group.push(
        result(
          'rewrite',
          `verify EncryptingLZ4 AES-128-CBC, ${label}`,
          verifyEnc.mbps,
          { name: `verify LZ4, ${label}`, mbps: verifyPlain.mbps },
          undefined,
          extra(verifyEnc),
        ),
      );
      for (const c of group) {
        cases.push(c);
        log(line(c).replace(/\n$/, `  peak ${c.maxRssMiB.toFixed(0)} MiB\n`));
      }
    }
  } finally {
    if (!args.includes('--keep')) fs.rmSync(work, { recursive: true, force: true });
  }
  return cases;
}

module.exports = { run };
if (require.main === module) main({ run });
