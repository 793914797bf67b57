'use strict';
/**
 * Makes a large LZ4Compressor SSTable for the rewrite benchmarks out of the bundled corpus: the
 * uncompressed data is real Cassandra partitions (every corpus table's decoded Data.db) followed
 * by as many bytes of the corpus's encrypted commit log segment (written by Cassandra; encrypted
 * bytes do not compress), repeated in that mix until the size asked for. The mix makes LZ4
 * compress it about 2:1, as production tables typically do, rather than the 40:1 of the corpus's
 * repetitive test rows alone (at 40:1 encryption would have almost nothing to do). The index and
 * metadata components come from the corpus table legacy_nb_clust, so an encrypting rewrite
 * transcodes them too.
 */
const fs = require('node:fs');
const path = require('node:path');

const tde = require('../../dist');

const ROOT = path.join(__dirname, '..', '..');
const CORPUS = path.join(ROOT, 'test', 'fixtures', 'sstables');
const DAMAGED = new Set(['lz4_invalid_checksums', 'lz4_invalid_digest']);
const TEMPLATE = path.join(CORPUS, 'nb', 'legacy_tables', 'legacy_nb_clust');

function corpusTables() {
  const out = [];
  for (const format of fs
    .readdirSync(CORPUS)
    .filter((f) => !f.includes('.'))
    .sort()) {
    for (const ks of fs.readdirSync(path.join(CORPUS, format))) {
      for (const table of fs.readdirSync(path.join(CORPUS, format, ks))) {
        if (!DAMAGED.has(table)) out.push(path.join(CORPUS, format, ks, table));
      }
    }
  }
  return out;
}

/** One period of the generated data: decoded partitions, then stored (compressed) bytes. */
async function period() {
  const keys = new tde.KeyProviders(tde.configFromObject({ system_key_directory: ROOT }));
  const plain = [];
  for (const dir of corpusTables()) {
    const [files] = tde.scanTableDirectory(dir).sstables;
    const reader = await tde.SSTableReader.open(files, { keys });
    for await (const batch of reader.batches()) plain.push(...batch);
    await reader.close();
  }
  keys.close();
  const p = Buffer.concat(plain);
  const segment = fs.readFileSync(
    path.join(
      ROOT,
      'test',
      'fixtures',
      'commitlog',
      '3.4-encrypted',
      'CommitLog-6-1480001790338.log',
    ),
  );
  return Buffer.concat([p, segment.subarray(0, Math.min(segment.length, p.length))]);
}

/**
 * Writes DIR/bench/big/nb-1-big-* holding `bytes` bytes of uncompressed data in 64 KiB LZ4
 * chunks (skipped when it is already there with that size). Returns the table directory.
 */
async function makeSSTable(dataDir, bytes) {
  const table = path.join(dataDir, 'bench', 'big');
  const marker = path.join(table, '.size');
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === `${bytes} v2`) return table;
  fs.rmSync(table, { recursive: true, force: true });
  fs.mkdirSync(table, { recursive: true });

  const compressor = await tde.compressorForTable({ class: 'LZ4Compressor', chunk_length_kb: 64 });
  const id = { dir: table, version: 'nb', generation: '1', format: 'big' };
  const writer = await tde.SSTableDataWriter.create({ id, params: compressor.params, compressor });
  const data = await period();
  for (let done = 0; done < bytes;) {
    const n = Math.min(data.length, bytes - done);
    await writer.write(data.subarray(0, n));
    done += n;
  }
  await writer.finish();
  for (const c of ['Index.db', 'Summary.db', 'Statistics.db', 'Filter.db']) {
    fs.copyFileSync(path.join(TEMPLATE, `nb-1-big-${c}`), path.join(table, `nb-1-big-${c}`));
  }
  fs.writeFileSync(
    path.join(table, 'nb-1-big-TOC.txt'),
    [
      'CompressionInfo.db',
      'Data.db',
      'Digest.crc32',
      'Filter.db',
      'Index.db',
      'Statistics.db',
      'Summary.db',
      'TOC.txt',
    ].join('\n') + '\n',
  );
  fs.writeFileSync(marker, `${bytes} v2`);
  return table;
}

module.exports = { makeSSTable, period };
