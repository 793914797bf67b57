/**
 * Index and metadata encryption: with a table encrypted, no file of its SSTables shows a partition
 * key; decrypting gives every component back byte for byte; the library reads the encrypted
 * components transparently; damage is reported by page; a start-up over undecryptable SSTables
 * follows disk_failure_policy and always says which SSTable it could not read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';

import { configFromObject } from '../src/config/config';
import { createKeyFile } from '../src/keys/key-file';
import { KeyProviders } from '../src/keys/provider';
import { upgradeSSTables } from '../src/rewrite/upgrade';
import { parseSchema } from '../src/schema/cql';
import { componentPath, scanTableDirectory, SSTableFiles } from '../src/sstable/descriptor';
import { EncryptedComponent, PAGE_SIZE, SENSITIVE_COMPONENTS } from '../src/sstable/page-file';
import { SSTableReader } from '../src/sstable/reader';
import { describeDataDirectory } from '../src/tools/describe';
import { openDataDirectory } from '../src/tools/open-data-dir';
import { verifyDataDirectory } from '../src/tools/verify';
import {
  cli,
  corpusTables,
  CORRUPT_TABLES,
  CorpusTable,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
} from './helpers';
import { partitionKeys } from './partition-keys';

const GOOD = corpusTables().filter((t) => !CORRUPT_TABLES.has(t.table));
const FORMATS = [...new Set(GOOD.map((t) => t.format))];

function schema(tables: CorpusTable[], compression: string): ReturnType<typeof parseSchema> {
  return parseSchema(
    tables
      .map((t) => `ALTER TABLE ${t.keyspace}.${t.table} WITH compression = ${compression};`)
      .join('\n'),
  );
}

const CBC =
  `{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', ` +
  `'secret_key_strength': 128}`;
const GCM =
  `{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/GCM/NoPadding', ` +
  `'secret_key_strength': 256}`;

/**
 * What an attacker with the files would search for. The corpus keys are short ("0".."4", or a
 * 4-byte int), and a short run of bytes turns up by chance in any file, so each needle is a
 * serialized key (short length, then the key) where the plain SSTable holds it, widened with its
 * neighbours to at least 12 bytes: a match in ciphertext by chance is then out of the question,
 * and a key left in plain text anywhere is found.
 */
function keyNeedles(keys: Buffer[], plainFiles: Buffer[]): Buffer[] {
  const needles = new Map<string, Buffer>();
  for (const key of keys) {
    const serialized = Buffer.concat([Buffer.from([key.length >> 8, key.length & 0xff]), key]);
    for (const file of plainFiles) {
      for (let at = file.indexOf(serialized); at >= 0; at = file.indexOf(serialized, at + 1)) {
        const widen = Math.max(0, Math.ceil((12 - serialized.length) / 2));
        const start = Math.max(0, at - widen);
        const needle = file.subarray(
          start,
          Math.min(file.length, Math.max(start + 12, at + serialized.length + widen)),
        );
        needles.set(needle.toString('hex'), needle);
      }
    }
  }
  return [...needles.values()];
}

function sstableFiles(files: SSTableFiles): Map<string, Buffer> {
  return new Map(files.components.map((c) => [c, fs.readFileSync(componentPath(files, c))]));
}

for (const format of FORMATS) {
  test(
    `${format}: encrypted SSTables show no partition key in any file; decrypted, every ` +
      `component is as before`,
    async (t) => {
      const tables = GOOD.filter((g) => g.format === format);
      const dataDir = makeDataDir((c) => c.format === format && !CORRUPT_TABLES.has(c.table));
      const keys = makeKeySetup();
      createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);

      // The oracle: every key decoded from the plain SSTable, and where the plain files hold it.
      const before = new Map<
        string,
        { files: Map<string, Buffer>; needles: Buffer[]; keys: Buffer[] }
      >();
      for (const table of tables) {
        const plain = onlySSTable(path.join(dataDir, table.keyspace, table.table));
        const data = await readAll(plain);
        const partitionKeysOf = partitionKeys(plain, data);
        const files = sstableFiles(plain);
        t.true(partitionKeysOf.length > 0, table.table);
        const needles = keyNeedles(partitionKeysOf, [...files.values(), data]);
        t.true(
          needles.length >= partitionKeysOf.length,
          `${table.table}: every key found in the plain files`,
        );
        before.set(table.table, { files, needles, keys: partitionKeysOf });
      }

      const encrypt = await upgradeSSTables({
        dataDir,
        config: keys.config,
        schema: schema(tables, CBC),
      });
      t.is(encrypt.failed, 0, JSON.stringify(encrypt.results.filter((r) => r.error)));

      for (const table of tables) {
        const enc = onlySSTable(path.join(dataDir, table.keyspace, table.table));
        const { files, needles } = before.get(table.table)!;
        const sensitive = SENSITIVE_COMPONENTS[enc.format].filter((c) =>
          enc.components.includes(c),
        );
        for (const [component, bytes] of sstableFiles(enc)) {
          for (const needle of needles) {
            t.is(
              bytes.indexOf(needle),
              -1,
              `${table.table} ${component} holds ${needle.toString('hex')}`,
            );
          }
          if (sensitive.includes(component))
            t.is(bytes.length % PAGE_SIZE, 0, `${component} is whole pages`);
        }

        // Read back through the library: the same plain bytes, and ranges across page boundaries.
        const reader = await SSTableReader.open(enc, { keys: new KeyProviders(keys.config) });
        try {
          t.deepEqual(reader.encryptedComponents, sensitive);
          for (const component of sensitive) {
            const c = await reader.openComponent(component);
            try {
              t.true(c instanceof EncryptedComponent);
              const original = files.get(component)!;
              t.is(c.size, original.length);
              t.true(
                (await c.readAll()).equals(original),
                `${table.table} ${component} reads back`,
              );
              if (original.length > 5000) {
                t.true((await c.read(4000, 1000)).equals(original.subarray(4000, 5000)));
                t.true(
                  (await c.read(original.length - 3, 3)).equals(
                    original.subarray(original.length - 3),
                  ),
                );
              }
            } finally {
              await c.close();
            }
          }
        } finally {
          await reader.close();
        }
      }

      // describe names the encrypted components.
      for (const d of describeDataDirectory(dataDir)) {
        const expected = ['Data.db', ...SENSITIVE_COMPONENTS[format === 'da' ? 'bti' : 'big']];
        t.deepEqual(d.encryptedComponents, expected, d.sstable);
      }
      t.is((await verifyDataDirectory({ dataDir, config: keys.config })).faults, 0);

      const decrypt = await upgradeSSTables({
        dataDir,
        config: keys.config,
        schema: schema(tables, `{'class': 'LZ4Compressor'}`),
      });
      t.is(decrypt.failed, 0, JSON.stringify(decrypt.results.filter((r) => r.error)));
      for (const table of tables) {
        const dec = onlySSTable(path.join(dataDir, table.keyspace, table.table));
        const { files } = before.get(table.table)!;
        for (const component of SENSITIVE_COMPONENTS[dec.format].filter((c) =>
          dec.components.includes(c),
        )) {
          t.true(
            fs.readFileSync(componentPath(dec, component)).equals(files.get(component)!),
            `${table.table} ${component} is byte-identical after decryption`,
          );
        }
        t.true(fs.readFileSync(componentPath(dec, 'Filter.db')).equals(files.get('Filter.db')!));
      }
      for (const d of describeDataDirectory(dataDir)) t.deepEqual(d.encryptedComponents, []);
    },
  );
}

/** One encrypted clust table (its Index.db spans many pages) in a fresh data directory. */
async function encryptedClust(compression = CBC, sharedKeys?: ReturnType<typeof makeKeySetup>) {
  const table = GOOD.find((g) => g.table === 'legacy_nb_clust')!;
  const dataDir = makeDataDir((c) => c.table === table.table);
  const keys = sharedKeys ?? makeKeySetup();
  if (!sharedKeys) {
    createKeyFile(
      keys.dir,
      'system_key',
      compression.includes('GCM') ? 'AES/GCM/NoPadding' : 'AES/CBC/PKCS5Padding',
      compression.includes('GCM') ? 256 : 128,
    );
  }
  const report = await upgradeSSTables({
    dataDir,
    config: keys.config,
    schema: schema([table], compression),
  });
  if (report.failed !== 0) throw new Error(JSON.stringify(report.results));
  return {
    dataDir,
    keys,
    files: onlySSTable(path.join(dataDir, table.keyspace, table.table)),
    original: table,
  };
}

/** Rewrites page `n` of a component with a valid CRC32 over its (altered) contents. */
function resealPage(file: string, n: number, alter: (page: Buffer) => void): void {
  const bytes = fs.readFileSync(file);
  const page = bytes.subarray(n * PAGE_SIZE, (n + 1) * PAGE_SIZE);
  alter(page);
  page.writeUInt32BE(zlib.crc32(page.subarray(0, PAGE_SIZE - 4)) >>> 0, PAGE_SIZE - 4);
  fs.writeFileSync(file, bytes);
}

test(
  'pages follow the DSE layout: ciphertext, zero ' + 'fill, encrypted length, CRC32 of the rest',
  async (t) => {
    const { files } = await encryptedClust();
    const index = fs.readFileSync(componentPath(files, 'Index.db'));
    t.true(index.length / PAGE_SIZE > 30);
    for (let n = 0; n < index.length / PAGE_SIZE; n++) {
      const page = index.subarray(n * PAGE_SIZE, (n + 1) * PAGE_SIZE);
      const length = page.readInt32BE(PAGE_SIZE - 8);
      t.is(page.readUInt32BE(PAGE_SIZE - 4), zlib.crc32(page.subarray(0, PAGE_SIZE - 4)) >>> 0);
      // [16-byte IV][CBC ciphertext]: a whole number of AES blocks after the IV.
      t.is((length - 16) % 16, 0);
      t.true(
        page.subarray(length, PAGE_SIZE - 8).every((b) => b === 0),
        `page ${n} is zero-filled`,
      );
    }
  },
);

test(
  'a damaged page is reported by verify and ' + 'by reads, naming the file and the page',
  async (t) => {
    const { dataDir, keys, files } = await encryptedClust();
    const index = componentPath(files, 'Index.db');
    const bytes = fs.readFileSync(index);
    bytes[7 * PAGE_SIZE + 100] ^= 0x01;
    fs.writeFileSync(index, bytes);

    const verify = await verifyDataDirectory({ dataDir, config: keys.config });
    const faults = verify.sstables.flatMap((s) => s.faults);
    t.is(faults.length, 1);
    t.is(faults[0].code, 'ERR_TDE_CHUNK_CHECKSUM');
    t.regex(faults[0].message, /Index\.db: page 7 at offset 28672 fails its CRC32/);

    const reader = await SSTableReader.open(files, { keys: new KeyProviders(keys.config) });
    const c = await reader.openComponent('Index.db');
    await t.notThrowsAsync(c.read(0, 4000));
    const err = await t.throwsAsync(c.readAll());
    t.is((err as any).code, 'ERR_TDE_CHUNK_CHECKSUM');
    t.is((err as any).context.chunk, 7);
    await c.close();
    await reader.close();
  },
);

// CBC has no integrity of its own: a page altered on purpose, CRC recomputed, decrypts to garbage
// unless its padding breaks (GCM, below, refuses every such change). What CBC can refuse for
// certain is a page whose stored length cannot be ciphertext.
test(
  'a page whose encrypted length is not whole cipher blocks is corrupt, with its CRC ' +
    'recomputed',
  async (t) => {
    const { keys, files } = await encryptedClust();
    const index = componentPath(files, 'Index.db');
    resealPage(index, 3, (page) => {
      page.writeInt32BE(page.readInt32BE(PAGE_SIZE - 8) - 1, PAGE_SIZE - 8);
    });
    const reader = await SSTableReader.open(files, { keys: new KeyProviders(keys.config) });
    const c = await reader.openComponent('Index.db');
    const err = await t.throwsAsync(c.readAll());
    t.is((err as any).code, 'ERR_TDE_CHUNK_LENGTH');
    t.regex((err as Error).message, /Index\.db: page 3/);
    await c.close();
    await reader.close();
  },
);

test(
  'GCM: two pages swapped (CRCs intact) fail ' + 'authentication at the first moved page',
  async (t) => {
    const { keys, files } = await encryptedClust(GCM);
    const index = componentPath(files, 'Index.db');
    const bytes = fs.readFileSync(index);
    const p2 = Buffer.from(bytes.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE));
    bytes.copy(bytes, 2 * PAGE_SIZE, 5 * PAGE_SIZE, 6 * PAGE_SIZE);
    p2.copy(bytes, 5 * PAGE_SIZE);
    fs.writeFileSync(index, bytes);

    const reader = await SSTableReader.open(files, { keys: new KeyProviders(keys.config) });
    const c = await reader.openComponent('Index.db');
    await t.notThrowsAsync(c.read(0, 100));
    const err = await t.throwsAsync(c.readAll());
    t.is((err as any).code, 'ERR_TDE_INTEGRITY');
    t.is((err as any).context.chunk, 2);
    t.regex((err as Error).message, /Index\.db: page 2 at offset 8192/);
    await c.close();
    await reader.close();
  },
);

test(
  'GCM: Statistics.db pages moved in from ' + 'another SSTable under the same key fail',
  async (t) => {
    // The same table encrypted twice under one key: only the SSTable binding tells them apart.
    const a = await encryptedClust(GCM);
    const b = (await encryptedClust(GCM, a.keys)).files;
    t.not(
      fs
        .readFileSync(componentPath(a.files, 'CompressionInfo.db'))
        .toString('latin1')
        .match(/[0-9a-f]{32}/)?.[0],
      fs
        .readFileSync(componentPath(b, 'CompressionInfo.db'))
        .toString('latin1')
        .match(/[0-9a-f]{32}/)?.[0],
    );
    fs.copyFileSync(componentPath(a.files, 'Statistics.db'), componentPath(b, 'Statistics.db'));

    // Opening reads the last page (for the plain size), which is already refused.
    const reader = await SSTableReader.open(b, { keys: new KeyProviders(a.keys.config) });
    const err = await t.throwsAsync(reader.openComponent('Statistics.db'));
    t.is((err as any).code, 'ERR_TDE_INTEGRITY');
    t.regex(
      (err as Error).message,
      /Statistics\.db: page 1 at offset 4096: .*moved from another position, SSTable/,
    );
    await reader.close();
  },
);

test('a truncated encrypted component is refused with its size, not read short', async (t) => {
  const { keys, files } = await encryptedClust();
  const summary = componentPath(files, 'Summary.db');
  fs.truncateSync(summary, PAGE_SIZE - 10);
  const reader = await SSTableReader.open(files, { keys: new KeyProviders(keys.config) });
  const err = await t.throwsAsync(reader.openComponent('Summary.db'));
  t.is((err as any).code, 'ERR_TDE_CORRUPT_CHUNK');
  t.regex(
    (err as Error).message,
    /Summary\.db is 4086 bytes, not a whole number of 4096-byte encrypted pages/,
  );
  await reader.close();
});

test('describe (CLI) lists the encrypted components of each SSTable', async (t) => {
  const { dataDir } = await encryptedClust();
  const r = await cli('describe', '--data-dir', dataDir);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /encrypted: Data\.db Index\.db Summary\.db Statistics\.db/);
});

test(
  'start-up: disk_failure_policy decides on an ' + 'SSTable whose key is gone, and always names it',
  async (t) => {
    const dataDir = makeDataDir(
      (c) => c.table === 'legacy_oa_simple' || c.table === 'legacy_da_simple',
    );
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    createKeyFile(keys.dir, 'other_key', 'AES/CBC/PKCS5Padding', 128);
    const oa = GOOD.find((g) => g.table === 'legacy_oa_simple')!;
    const da = GOOD.find((g) => g.table === 'legacy_da_simple')!;
    await upgradeSSTables({ dataDir, config: keys.config, schema: schema([oa], CBC) });
    await upgradeSSTables({
      dataDir,
      config: keys.config,
      schema: schema([da], CBC.replace('}', `, 'system_key_file': 'other_key'}`)),
    });

    const all = await openDataDirectory(dataDir, { config: keys.config });
    t.is(all.sstables.length, 2);
    t.deepEqual(all.unreadable, []);

    fs.rmSync(path.join(keys.dir, 'other_key'));
    const stop = await t.throwsAsync(openDataDirectory(dataDir, { config: keys.config }));
    t.is((stop as any).code, 'ERR_TDE_UNREADABLE_SSTABLE');
    t.regex((stop as Error).message, /legacy_da_simple.*disk_failure_policy is stop.*other_key/s);

    const warnings: string[] = [];
    const skipped = await openDataDirectory(dataDir, {
      config: keys.config,
      diskFailurePolicy: 'best_effort',
      onWarning: (w) => warnings.push(`${w.action} ${w.sstable} ${w.code}`),
    });
    t.is(skipped.sstables.length, 1);
    t.true(skipped.sstables[0].dir.endsWith('legacy_oa_simple'));
    t.is(skipped.unreadable.length, 1);
    t.is(warnings.length, 1);
    t.regex(warnings[0], /^skipped .*legacy_da_simple.* ERR_TDE_KEY_FILE$/);

    const ignored = await openDataDirectory(dataDir, {
      config: keys.config,
      diskFailurePolicy: 'ignore',
      onWarning: (w) => warnings.push(w.action),
    });
    t.is(ignored.sstables.length, 2);
    t.is(warnings.at(-1), 'ignored');

    // The setting of the same name in the config file, as in cassandra.yaml.
    const fromFile = configFromObject({
      system_key_directory: keys.dir,
      disk_failure_policy: 'best_effort',
    });
    t.is((await openDataDirectory(dataDir, { config: fromFile })).sstables.length, 1);

    await t.throwsAsync(
      openDataDirectory(dataDir, { config: keys.config, diskFailurePolicy: 'skip' as any }),
      { message: /disk_failure_policy "skip" is not one of/ },
    );
  },
);

test(
  'start-up: an SSTable whose encrypted Partitions.db is damaged stops the start, naming the ' +
    'page',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_da_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const da = GOOD.find((g) => g.table === 'legacy_da_clust')!;
    await upgradeSSTables({ dataDir, config: keys.config, schema: schema([da], CBC) });
    const files = scanTableDirectory(path.join(dataDir, da.keyspace, da.table)).sstables[0];
    const partitions = componentPath(files, 'Partitions.db');
    const bytes = fs.readFileSync(partitions);
    bytes[10] ^= 0xff;
    fs.writeFileSync(partitions, bytes);

    const err = await t.throwsAsync(openDataDirectory(dataDir, { config: keys.config }));
    t.is((err as any).code, 'ERR_TDE_UNREADABLE_SSTABLE');
    t.regex((err as Error).message, /Partitions\.db: page 0 at offset 0 fails its CRC32/);
  },
);
