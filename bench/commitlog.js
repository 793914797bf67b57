#!/usr/bin/env node
/**
 * Commit log append throughput, encryption on and off, measured in the same run: entries of a
 * typical mutation's size are appended to a segment and synced every `syncBytes`, as a storage
 * process would. The encrypted case is Cassandra's layout (LZ4 then AES/CBC/PKCS5Padding per
 * block); the baseline is a plain segment with the same sync markers.
 *
 *   node bench/commitlog.js [--quick] [--json FILE]     (--quick: 32 MiB, one shape)
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { SegmentWriter } = require('../dist/commitlog/segment');

const { line, main, result } = require('./lib/common');

async function append(label, encryption, entrySize, syncBytes, total) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-bench-cl-'));
  // Realistic entries: partly repetitive, as serialized mutations are.
  const entries = Array.from({ length: 256 }, (_, i) =>
    Buffer.concat([
      Buffer.from(`ks.table partition-${i} clustering `.repeat(Math.ceil(entrySize / 64))).subarray(
        0,
        entrySize / 2,
      ),
      crypto.randomBytes(entrySize / 2),
    ]),
  );
  const times = [];
  for (let rep = 0; rep < 3; rep++) {
    const file = path.join(dir, `CommitLog-7-${rep}.log`);
    const w = await SegmentWriter.create({
      file,
      id: BigInt(rep + 1),
      encryption,
      blockLength: 65536,
    });
    const start = process.hrtime.bigint();
    let sinceSync = 0;
    for (let done = 0, i = 0; done < total; i++) {
      const e = entries[i & 255];
      w.append(e);
      done += e.length;
      sinceSync += e.length;
      if (sinceSync >= syncBytes) {
        await w.sync();
        sinceSync = 0;
      }
    }
    await w.close();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
    fs.rmSync(file);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  times.sort((a, b) => a - b);
  return { name: label, mbps: total / times[1] / 1e6 };
}

async function run({ quick = false, log = () => {} } = {}) {
  const total = (quick ? 32 : 256) * 1024 * 1024;
  const key = crypto.randomBytes(16);
  const enc = { transformation: 'AES/CBC/PKCS5Padding', key, keyAlias: 'bench' };
  const cases = [];
  log(`\n== commit log append: ${total >> 20} MiB per case\n`);
  const shapes = quick
    ? [[256, 1 << 20]]
    : [
        [256, 1 << 20],
        [1024, 1 << 20],
        [256, 8 << 20],
      ];
  for (const [entrySize, syncBytes] of shapes) {
    const what = `${entrySize} B entries, sync every ${syncBytes >> 20} MiB`;
    const plain = await append(
      `commit log append, plain, ${what}`,
      undefined,
      entrySize,
      syncBytes,
      total,
    );
    const encrypted = await append(
      `commit log append, AES/CBC/PKCS5Padding, ${what}`,
      enc,
      entrySize,
      syncBytes,
      total,
    );
    const c = result('commitlog', encrypted.name, encrypted.mbps, plain);
    cases.push(c);
    log(line(c));
  }
  return cases;
}

module.exports = { run };
if (require.main === module) main({ run });
