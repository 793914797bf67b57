#!/usr/bin/env node
/**
 * Commit log append throughput, encryption on and off, measured in the same run: entries of a
 * typical mutation's size are appended to a segment and synced every `syncBytes`, as a storage
 * process would. The encrypted case is Cassandra's layout (LZ4 then AES/CBC/PKCS5Padding per
 * block); the baseline is a plain segment with the same sync markers.
 *
 *   node bench/commitlog.js [--quick] [--json FILE]
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { SegmentWriter } = require('../dist/commitlog/segment');

const quick = process.argv.includes('--quick');
const jsonFile = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
const TOTAL = (quick ? 64 : 256) * 1024 * 1024;

async function run(label, encryption, entrySize, syncBytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-bench-cl-'));
  // Realistic entries: partly repetitive, as serialized mutations are.
  const entries = Array.from({ length: 256 }, (_, i) => Buffer.concat([
    Buffer.from(`ks.table partition-${i} clustering `.repeat(Math.ceil(entrySize / 64))).subarray(0, entrySize / 2),
    crypto.randomBytes(entrySize / 2),
  ]));
  const times = [];
  for (let rep = 0; rep < 3; rep++) {
    const file = path.join(dir, `CommitLog-7-${rep}.log`);
    const w = await SegmentWriter.create({ file, id: BigInt(rep + 1), encryption, blockLength: 65536 });
    const start = process.hrtime.bigint();
    let sinceSync = 0;
    for (let done = 0, i = 0; done < TOTAL; i++) {
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
  return { name: label, mbps: +(TOTAL / times[1] / 1e6).toFixed(1) };
}

async function main() {
  const key = crypto.randomBytes(16);
  const enc = { transformation: 'AES/CBC/PKCS5Padding', key, keyAlias: 'bench' };
  const results = [];
  process.stdout.write(`${os.cpus()[0].model}, ${os.cpus().length} cores, Node ${process.version}; ${TOTAL >> 20} MiB per case\n\n`);
  process.stdout.write('case                                   MB/s   baseline MB/s   ratio\n');
  for (const [entrySize, syncBytes] of [[256, 1 << 20], [1024, 1 << 20], [256, 8 << 20]]) {
    const plain = await run(`plain ${entrySize}B entries, sync every ${syncBytes >> 20} MiB`, undefined, entrySize, syncBytes);
    const encrypted = await run(`encrypted ${entrySize}B entries, sync every ${syncBytes >> 20} MiB`, enc, entrySize, syncBytes);
    const r = {
      name: encrypted.name,
      mbps: encrypted.mbps,
      baseline: { name: plain.name, mbps: plain.mbps },
      ratio: +(encrypted.mbps / plain.mbps).toFixed(2),
    };
    results.push(r);
    process.stdout.write(`${r.name.padEnd(38)} ${String(r.mbps).padStart(6)} ${String(plain.mbps).padStart(15)} ${r.ratio.toFixed(2).padStart(7)}\n`);
  }
  const doc = { machine: { cpu: os.cpus()[0].model, cores: os.cpus().length, node: process.version }, results };
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(doc, null, 2));
  process.stdout.write('\n' + JSON.stringify(doc) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
