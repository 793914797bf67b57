import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { parseCompressionInfo, serializeCompressionInfo } from '../src/sstable/compression-info';
import { parseCrcDb, serializeCrcDb } from '../src/sstable/crc-db';
import {
  componentPath,
  featuresOf,
  parseComponentName,
  scanTableDirectory,
} from '../src/sstable/descriptor';
import { SSTableReader } from '../src/sstable/reader';
import { corpusTables, CORRUPT_TABLES, readAll } from './helpers';

/** Numbers from the corpus README: chunks and uncompressed data length per table. */
const EXPECTED: Record<string, { chunks?: number; dataLength: number; checksum: string }> = {
  legacy_da_clust: { chunks: 21, dataLength: 335958, checksum: 'crc32' },
  legacy_da_simple: { chunks: 1, dataLength: 118, checksum: 'crc32' },
  legacy_da_simple_counter: { chunks: 1, dataLength: 243, checksum: 'crc32' },
  legacy_la_simple: { chunks: 1, dataLength: 335, checksum: 'adler32' },
  pk_types_deflate: { chunks: 1, dataLength: 606, checksum: 'crc32' },
  pk_types_snappy: { chunks: 1, dataLength: 605, checksum: 'crc32' },
  pk_types_uncompressed: { dataLength: 612, checksum: 'crc32' },
  simple_uncompressed: { dataLength: 177, checksum: 'crc32' },
  legacy_me_clust: { chunks: 6, dataLength: 336014, checksum: 'crc32' },
  legacy_me_clust_counter: { chunks: 5, dataLength: 312514, checksum: 'crc32' },
  legacy_me_simple: { chunks: 1, dataLength: 173, checksum: 'crc32' },
  legacy_me_simple_counter: { chunks: 1, dataLength: 298, checksum: 'crc32' },
  lz4_invalid_checksums: { chunks: 6, dataLength: 21532, checksum: 'crc32' },
  legacy_nb_clust: { chunks: 21, dataLength: 336016, checksum: 'crc32' },
  legacy_nb_clust_counter: { chunks: 20, dataLength: 312516, checksum: 'crc32' },
  legacy_nb_simple: { chunks: 1, dataLength: 173, checksum: 'crc32' },
  legacy_oa_clust: { chunks: 21, dataLength: 335958, checksum: 'crc32' },
  legacy_oa_simple: { chunks: 1, dataLength: 118, checksum: 'crc32' },
  legacy_oa_simple_counter: { chunks: 1, dataLength: 243, checksum: 'crc32' },
};

test('component file names parse for every corpus format and BIG/BTI', (t) => {
  t.deepEqual(parseComponentName('nb-1-big-Data.db'), {
    version: 'nb',
    generation: '1',
    format: 'big',
    component: 'Data.db',
  });
  t.deepEqual(parseComponentName('da-3gmd_0ov4_1pqn41sapc2pqsr1hn-bti-Partitions.db'), {
    version: 'da',
    generation: '3gmd_0ov4_1pqn41sapc2pqsr1hn',
    format: 'bti',
    component: 'Partitions.db',
  });
  t.is(parseComponentName('sstable-tde-txn-nb-2-big.log'), undefined);
  t.is(featuresOf({ version: 'la', format: 'big' }).checksum, 'adler32');
  t.true(featuresOf({ version: 'na', format: 'big' }).hasMaxCompressedLength);
  t.false(featuresOf({ version: 'me', format: 'big' }).hasMaxCompressedLength);
  t.throws(() => featuresOf({ version: 'ka', format: 'big' }), { code: 'ERR_TDE_UNSUPPORTED' });
});

test('every corpus CompressionInfo.db parses and serializes back to the same bytes', (t) => {
  let n = 0;
  for (const table of corpusTables()) {
    const [files] = scanTableDirectory(table.dir).sstables;
    if (!files.components.includes('CompressionInfo.db')) continue;
    const file = componentPath(files, 'CompressionInfo.db');
    const raw = fs.readFileSync(file);
    const features = featuresOf(files);
    const info = parseCompressionInfo(raw, file, features.hasMaxCompressedLength);
    t.is(info.chunkOffsets.length, EXPECTED[table.table].chunks, table.table);
    t.is(info.dataLength, EXPECTED[table.table].dataLength, table.table);
    if (features.hasMaxCompressedLength) t.is(info.maxCompressedLength, 0x7fffffff);
    t.true(
      serializeCompressionInfo(info, features.hasMaxCompressedLength).equals(raw),
      table.table,
    );
    n++;
  }
  t.is(n, 17);
});

test('every corpus CRC.db parses and serializes back to the same bytes', (t) => {
  for (const name of ['pk_types_uncompressed', 'simple_uncompressed']) {
    const table = corpusTables().find((c) => c.table === name)!;
    const [files] = scanTableDirectory(table.dir).sstables;
    const raw = fs.readFileSync(componentPath(files, 'CRC.db'));
    const crc = parseCrcDb(raw, 'CRC.db', fs.statSync(componentPath(files, 'Data.db')).size);
    t.is(crc.chunkLength, 65536);
    t.true(serializeCrcDb(crc).equals(raw));
  }
});

test(
  'a truncated CompressionInfo.db is refused with ERR_TDE_CORRUPT_COMPRESSION_INFO naming the ' +
    'file',
  (t) => {
    const table = corpusTables().find((c) => c.table === 'legacy_nb_clust')!;
    const file = path.join(table.dir, 'nb-1-big-CompressionInfo.db');
    const raw = fs.readFileSync(file);
    for (const cut of [0, 1, 10, 30, raw.length - 1]) {
      const err = t.throws(() => parseCompressionInfo(raw.subarray(0, cut), file, true), {
        code: 'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      });
      t.true(err?.message.includes(file));
    }
  },
);

test(
  'CompressionInfo.db with impossible values is refused before anything is allocated from ' +
    'them',
  (t) => {
    const table = corpusTables().find((c) => c.table === 'legacy_nb_clust')!;
    const raw = fs.readFileSync(path.join(table.dir, 'nb-1-big-CompressionInfo.db'));
    const nameLen = raw.readUInt16BE(0);
    const at = 2 + nameLen + 4; // chunk length follows class name and option count
    const zeroChunk = Buffer.from(raw);
    zeroChunk.writeInt32BE(0, at);
    t.throws(() => parseCompressionInfo(zeroChunk, 'x', true), { message: /chunk length 0/ });
    const hugeCount = Buffer.from(raw);
    hugeCount.writeInt32BE(0x7fffffff, at + 4 + 4 + 8);
    t.throws(() => parseCompressionInfo(hugeCount, 'x', true), {
      code: 'ERR_TDE_CORRUPT_COMPRESSION_INFO',
    });
    const negativeLength = Buffer.from(raw);
    negativeLength.writeBigInt64BE(-5n, at + 8);
    t.throws(() => parseCompressionInfo(negativeLength, 'x', true), { message: /out of range/ });
    const manyOptions = Buffer.from(raw);
    manyOptions.writeInt32BE(1 << 30, 2 + nameLen);
    t.throws(() => parseCompressionInfo(manyOptions, 'x', true), { message: /option count/ });
  },
);

for (const table of corpusTables().filter((c) => !CORRUPT_TABLES.has(c.table))) {
  test(
    `${table.format}/${table.table}: reads every chunk and verifies checksums and ` + `digest`,
    async (t) => {
      const [files] = scanTableDirectory(table.dir).sstables;
      const reader = await SSTableReader.open(files);
      try {
        t.is(reader.dataLength, EXPECTED[table.table].dataLength);
        t.is(reader.features.checksum, EXPECTED[table.table].checksum as 'crc32' | 'adler32');
        const report = await reader.verify(files.components.find((c) => c.startsWith('Digest.')));
        t.deepEqual(report.faults, []);
        t.is(report.dataBytes, EXPECTED[table.table].dataLength);

        // Reads by position agree with the streamed data.
        const all = await readAll(files);
        t.is(all.length, reader.dataLength);
        const mid = Math.floor(all.length / 3);
        const len = Math.min(all.length - mid, 70000);
        t.true((await reader.read(mid, len)).equals(all.subarray(mid, mid + len)));
        t.true((await reader.read(0, 1)).equals(all.subarray(0, 1)));
        await t.throwsAsync(() => reader.read(all.length - 1, 2), { code: 'ERR_TDE_READ_RANGE' });
      } finally {
        await reader.close();
      }
    },
  );
}

test(
  'legacy_me_simple: the data starts with the ' + 'first partition key that Index.db lists',
  async (t) => {
    // sstable-format.md §8: Index.db and each partition in Data.db start with a 2-byte key length
    // and the key; the first index entry points at position 0.
    const table = corpusTables().find((c) => c.table === 'legacy_me_simple')!;
    const data = await readAll(scanTableDirectory(table.dir).sstables[0]);
    const index = fs.readFileSync(path.join(table.dir, 'me-1-big-Index.db'));
    const keyLen = index.readUInt16BE(0);
    t.true(keyLen > 0 && keyLen < 64);
    t.true(data.subarray(0, 2 + keyLen).equals(index.subarray(0, 2 + keyLen)));
  },
);

test(
  'lz4_invalid_checksums: chunk 2 is reported with its index and offset, and the digest ' +
    'mismatch too',
  async (t) => {
    const table = corpusTables().find((c) => c.table === 'lz4_invalid_checksums')!;
    const [files] = scanTableDirectory(table.dir).sstables;
    const reader = await SSTableReader.open(files);
    try {
      const report = await reader.verify('Digest.crc32');
      t.deepEqual(
        report.faults.map((f) => [f.code, f.chunk]),
        [
          ['ERR_TDE_CHUNK_CHECKSUM', 2],
          ['ERR_TDE_DIGEST_MISMATCH', undefined],
        ],
      );
      t.is(report.faults[0].offset, reader.compressionInfo!.chunkOffsets[2]);
      t.regex(report.faults[0].message, /chunk 2 at offset \d+/);
      await t.throwsAsync(() => reader.readChunks(2, 1), { code: 'ERR_TDE_CHUNK_CHECKSUM' });
      t.is((await reader.readChunks(1, 1))[0].length, 4096);
    } finally {
      await reader.close();
    }
  },
);
