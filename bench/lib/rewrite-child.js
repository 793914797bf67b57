'use strict';
/**
 * One measured run, in its own process so that its peak memory is its own:
 *   node rewrite-child.js upgrade DATA_DIR SCHEMA_FILE KEY_DIR   the rewrite, as the CLI does it
 *   node rewrite-child.js verify DATA_DIR KEY_DIR                 verify, as the CLI does it
 *   node rewrite-child.js compute DATA_DIR KEY_DIR                a rewrite's work without its
 *       file writes: read, check, decode, then compress, encrypt and checksum every batch with
 *       EncryptingLZ4Compressor AES-128-CBC, and drop the result (how the work scales with cores)
 *   node rewrite-child.js write DATA_DIR BYTES                    the file system alone: BYTES
 *       written to a new file in 8 MiB writes, then fsync (the ceiling a rewrite's writes meet)
 * Prints one JSON line: { seconds, bytes, maxRssMiB }.
 */
const fs = require('node:fs');
const path = require('node:path');

const tde = require('../../dist');
const { checksumFor } = require('../../dist/checksum');

async function compute(dataDir, config) {
  const keys = new tde.KeyProviders(config);
  const [table] = tde.findTables(dataDir);
  const [files] = tde.liveSSTables(table.dir).sstables;
  const reader = await tde.SSTableReader.open(files, { keys });
  const compressor = await tde.compressorForTable(
    {
      class: 'EncryptingLZ4Compressor',
      cipher_algorithm: 'AES/CBC/PKCS5Padding',
      secret_key_strength: 128,
      chunk_length_kb: 64,
    },
    { keys },
  );
  const crc = checksumFor('crc32');
  let bytes = 0;
  let digest = 0;
  let previous = Promise.resolve();
  // Two batches in flight, as the SSTable writer keeps them.
  for await (const { chunks } of reader.batchesWithCrc()) {
    const done = previous;
    previous = compressor
      .compressBatch(chunks, undefined, { sums: 'crc32' })
      .then(async (stored) => {
        await done;
        // As the writer does: chunk checksums come from the encoding pass and the digest is
        // folded from them, or a pass of their own where the codec is not the addon's.
        const lengths = stored.map((c) => c.length);
        digest = stored.sums
          ? crc.fold(stored.sums, lengths, digest, true)
          : (await crc.batch(stored, digest, true)).combined;
        compressor.recycle(stored);
        reader.recycle(chunks);
      });
    bytes += chunks.reduce((n, c) => n + c.length, 0);
    await done;
  }
  await previous;
  await reader.close();
  compressor.close();
  keys.close();
  return bytes;
}

async function write(dataDir, bytes) {
  const file = path.join(dataDir, 'io-ceiling');
  const piece = Buffer.alloc(8 << 20, 0x5a);
  const fd = await fs.promises.open(file, 'w');
  for (let at = 0; at < bytes; at += piece.length)
    await fd.write(piece, 0, Math.min(piece.length, bytes - at), at);
  await fd.sync();
  await fd.close();
  fs.rmSync(file);
  return bytes;
}

async function main() {
  const [verb, dataDir, a, b] = process.argv.slice(2);
  const keyDir = verb === 'upgrade' ? b : a;
  const config = tde.configFromObject({ system_key_directory: keyDir ?? dataDir });
  const start = process.hrtime.bigint();
  let bytes = 0;
  if (verb === 'upgrade') {
    const schema = tde.parseSchema(fs.readFileSync(a, 'utf8'));
    const report = await tde.upgradeSSTables({
      dataDir,
      config,
      schema,
      includeAll: true,
      onEvent: (e) => {
        if (e.type === 'progress') bytes = e.bytes;
      },
    });
    if (report.failed !== 0 || report.rewritten !== 1)
      throw new Error(JSON.stringify(report.results));
  } else if (verb === 'verify') {
    const report = await tde.verifyDataDirectory({ dataDir, config });
    if (report.faults !== 0) throw new Error(JSON.stringify(report));
    bytes = report.sstables.reduce((n, s) => n + s.dataBytes, 0);
  } else if (verb === 'compute') {
    bytes = await compute(dataDir, config);
  } else if (verb === 'write') {
    bytes = await write(dataDir, Number(a));
  } else {
    throw new Error(`unknown verb ${verb}`);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // VmHWM: this process's own peak. getrusage's maxRSS would also count the parent's peak,
  // which a child inherits through fork.
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  const maxRssMiB = hwm ? Number(hwm[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
  process.stdout.write(JSON.stringify({ seconds, bytes, maxRssMiB }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
