import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { configFromObject } from '../src/config/config';
import { createKeyFile } from '../src/keys/key-file';
import { upgradeSSTables } from '../src/rewrite/upgrade';
import { parseSchema } from '../src/schema/cql';
import { componentPath, scanTableDirectory } from '../src/sstable/descriptor';
import { describeDataDirectory } from '../src/tools/describe';
import { verifyDataDirectory } from '../src/tools/verify';
import {
  cli,
  corpusTables,
  CORRUPT_TABLES,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  upgradeCommand,
} from './helpers';

const GOOD = corpusTables().filter((t) => !CORRUPT_TABLES.has(t.table));

/** Uncompressed data of every good corpus table, read from the fixtures. */
async function originals(): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const t of GOOD)
    out.set(`${t.keyspace}.${t.table}`, await readAll(scanTableDirectory(t.dir).sstables[0]));
  return out;
}

function schemaFor(compression: string): string {
  return GOOD.map(
    (t) => `ALTER TABLE ${t.keyspace}.${t.table} WITH compression = ${compression};`,
  ).join('\n');
}

/** A corpus table written by Cassandra with LZ4, to which jobs tests add SSTables. */
const LZ4_TABLE = GOOD.find((g) => g.format === 'nb' && g.table.includes('lz4')) ?? GOOD[0];

/**
 * Copies the only SSTable of `dir` under generations 100 and 101, so that the directory holds
 * three SSTables with the same data (jobs in one directory then pick generations at once).
 */
function addCopies(dir: string): void {
  const own = onlySSTable(dir);
  for (const generation of ['100', '101'])
    for (const c of own.components)
      fs.copyFileSync(componentPath(own, c), componentPath({ ...own, generation }, c));
}

async function checkStage(
  t: any,
  dataDir: string,
  config: ReturnType<typeof configFromObject>,
  expected: Map<string, Buffer>,
  wantClass: string | null,
) {
  const verify = await verifyDataDirectory({ dataDir, config });
  t.is(verify.faults, 0, JSON.stringify(verify.sstables.flatMap((s) => s.faults)));
  t.is(verify.sstables.length, GOOD.length);
  for (const table of GOOD) {
    const files = onlySSTable(path.join(dataDir, table.keyspace, table.table));
    const data = await readAll(files, config);
    t.true(
      data.equals(expected.get(`${table.keyspace}.${table.table}`)!),
      `${table.table} data differs`,
    );
  }
  for (const d of describeDataDirectory(dataDir)) t.is(d.compressor, wantClass, d.sstable);
}

for (const cls of [
  'EncryptingLZ4Compressor',
  'Encryptor',
  'EncryptingDeflateCompressor',
  'EncryptingSnappyCompressor',
]) {
  test(
    `every corpus table: original -> ${cls} AES/CBC/PKCS5Padding 128 -> LZ4Compressor keeps ` +
      `the data byte for byte`,
    async (t) => {
      const expected = await originals();
      const dataDir = makeDataDir();
      const keys = makeKeySetup();
      createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);

      const encrypt = await upgradeSSTables({
        dataDir,
        config: keys.config,
        schema: parseSchema(
          schemaFor(
            `{'class': '${cls}', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', ` +
              `'secret_key_strength': 128}`,
          ),
        ),
      });
      t.is(encrypt.failed, 0, JSON.stringify(encrypt.results.filter((r) => r.error)));
      t.is(encrypt.rewritten, GOOD.length);
      await checkStage(t, dataDir, keys.config, expected, cls);
      for (const d of describeDataDirectory(dataDir)) {
        t.true(d.encrypted);
        t.is(d.options.cipher_algorithm, 'AES/CBC/PKCS5Padding');
        t.is(d.options.system_key_file, 'system_key');
      }

      const decrypt = await upgradeSSTables({
        dataDir,
        config: keys.config,
        schema: parseSchema(schemaFor(`{'class': 'LZ4Compressor'}`)),
      });
      t.is(decrypt.failed, 0, JSON.stringify(decrypt.results.filter((r) => r.error)));
      t.is(decrypt.rewritten, GOOD.length);
      await checkStage(t, dataDir, keys.config, expected, 'LZ4Compressor');
    },
  );
}

test(
  'encrypted Data.db holds no plaintext: a ' + 'string from the data is gone after Encryptor',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'pk_types_uncompressed');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/ECB/PKCS5Padding', 256);
    const dir = path.join(dataDir, 'test_ks', 'pk_types_uncompressed');
    const before = fs.readFileSync(path.join(dir, 'mc-1-big-Data.db'));
    // Any 8-byte run of the plain file: with ECB or CBC none survives encryption.
    const needle = before.subarray(before.length - 40, before.length - 32);
    t.true(before.includes(needle));

    const report = await upgradeSSTables({
      dataDir,
      config: keys.config,
      schema: parseSchema(
        `ALTER TABLE test_ks.pk_types_uncompressed WITH compression = {'class': 'Encryptor', ` +
          `'cipher_algorithm': 'AES/ECB/PKCS5Padding', 'secret_key_strength': 256};`,
      ),
    });
    t.is(report.rewritten, 1);
    const after = fs.readFileSync(path.join(dir, 'mc-2-big-Data.db'));
    t.false(after.includes(needle));
    t.true((await readAll(onlySSTable(dir), keys.config)).equals(before));
  },
);

test(
  'tables already as their schema asks are ' + 'left alone, and -a rewrites them anyway',
  async (t) => {
    const dataDir = makeDataDir(
      (c) => c.table === 'legacy_nb_clust' || c.table === 'legacy_me_simple',
    );
    const keys = makeKeySetup();
    const schema = parseSchema(
      `
    CREATE TABLE legacy_tables.legacy_nb_clust (k int PRIMARY KEY) WITH compression = {` +
        `'class': 'LZ4Compressor', 'chunk_length_in_kb': '16'};
    CREATE TABLE legacy_tables.legacy_me_simple (k int PRIMARY KEY);`,
    );
    const first = await upgradeSSTables({ dataDir, config: keys.config, schema });
    t.deepEqual(
      first.results.map((r) => r.status),
      ['unchanged', 'unchanged'],
    );

    const all = await upgradeSSTables({ dataDir, config: keys.config, schema, includeAll: true });
    t.deepEqual(
      all.results.map((r) => r.status),
      ['rewritten', 'rewritten'],
    );
    t.is(onlySSTable(path.join(dataDir, 'legacy_tables', 'legacy_nb_clust')).generation, '2');
  },
);

test(
  'chunk_length_kb may differ from the source: ' + '16 KiB LZ4 becomes 4 KiB encrypted chunks',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_oa_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'k2', 'AES/CBC/PKCS5Padding', 192);
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_oa_clust');
    const original = await readAll(onlySSTable(dir));
    const report = await upgradeSSTables({
      dataDir,
      config: keys.config,
      schema: parseSchema(
        `ALTER TABLE legacy_tables.legacy_oa_clust WITH compression = {'class': ` +
          `'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', ` +
          `'secret_key_strength': 192, 'system_key_file': 'k2', 'chunk_length_kb': 4};`,
      ),
    });
    t.is(report.rewritten, 1);
    const [d] = describeDataDirectory(dataDir);
    t.is(d.chunkLength, 4096);
    t.is(d.chunkCount, Math.ceil(original.length / 4096));
    t.true((await readAll(onlySSTable(dir), keys.config)).equals(original));
  },
);

test(
  'rekeying: a table moved to a new key file is ' + 'rewritten from the old key to the new one',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_nb_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'old_key', 'AES/CBC/PKCS5Padding', 128);
    createKeyFile(keys.dir, 'new_key', 'AES/CBC/PKCS5Padding', 128);
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');
    const original = await readAll(onlySSTable(dir));
    const alter = (key: string) =>
      parseSchema(
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': ` +
          `'EncryptingLZ4Compressor', 'system_key_file': '${key}'};`,
      );

    t.is(
      (await upgradeSSTables({ dataDir, config: keys.config, schema: alter('old_key') })).rewritten,
      1,
    );
    t.is(
      (await upgradeSSTables({ dataDir, config: keys.config, schema: alter('new_key') })).rewritten,
      1,
    );
    // The old key file is no longer needed: move it away and read with the new key only.
    fs.renameSync(path.join(keys.dir, 'old_key'), path.join(keys.dir, 'old_key.bak'));
    t.true((await readAll(onlySSTable(dir), keys.config)).equals(original));
    t.is(describeDataDirectory(dataDir)[0].options.system_key_file, 'new_key');
  },
);

test(
  'jobs: four SSTables at once, three of them in one table directory, come out as one at a ' +
    'time does: same results in the same order, distinct generations, the data byte for byte',
  async (t) => {
    const expected = await originals();
    const tripled = LZ4_TABLE;
    const withCopies = () => {
      const dataDir = makeDataDir();
      addCopies(path.join(dataDir, tripled.keyspace, tripled.table));
      return dataDir;
    };
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const schema = parseSchema(
      schemaFor(
        "{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', " +
          "'secret_key_strength': 128}",
      ),
    );

    const serial = await upgradeSSTables({ dataDir: withCopies(), config: keys.config, schema });
    const dataDir = withCopies();
    const started: string[] = [];
    let running = 0;
    let most = 0;
    const parallel = await upgradeSSTables({
      dataDir,
      config: keys.config,
      schema,
      jobs: 4,
      onEvent: (e) => {
        if (e.type === 'start') {
          started.push(e.sstable);
          most = Math.max(most, ++running);
        }
        if (e.type === 'done' && e.result.status === 'rewritten') running--;
      },
    });
    t.is(parallel.failed, 0, JSON.stringify(parallel.results.filter((r) => r.error)));
    t.is(parallel.rewritten, GOOD.length + 2);
    t.is(most, 4);
    const summary = (r: (typeof parallel.results)[number]) => [r.sstable, r.status, r.newSSTable];
    t.deepEqual(parallel.results.map(summary), serial.results.map(summary));
    t.deepEqual(
      started,
      serial.results.map((r) => r.sstable),
    );

    const verify = await verifyDataDirectory({ dataDir, config: keys.config });
    t.is(verify.faults, 0);
    const dir = path.join(dataDir, tripled.keyspace, tripled.table);
    const live = scanTableDirectory(dir).sstables;
    t.is(new Set(live.map((s) => s.generation)).size, 3);
    for (const files of live) {
      const data = await readAll(files, keys.config);
      t.true(data.equals(expected.get(`${tripled.keyspace}.${tripled.table}`)!), files.generation);
    }
  },
);

test('jobs outside 1 to 64 is refused before anything is touched', async (t) => {
  const dataDir = makeDataDir((c) => c.table === GOOD[0].table);
  const keys = makeKeySetup();
  for (const jobs of [0, 1.5, 65, Number.NaN]) {
    await t.throwsAsync(
      () => upgradeSSTables({ dataDir, config: keys.config, schema: new Map(), jobs }),
      { code: 'ERR_TDE_INVALID_ARGUMENT', message: /jobs must be a whole number from 1 to 64/ },
    );
  }
  t.false(
    fs.readdirSync(dataDir).some((f) => f.startsWith('.')),
    'no lock left behind',
  );

  // The command refuses what is not a whole number as typed, and runs with a good one.
  const schema = path.join(keys.dir, 'schema.cql');
  fs.writeFileSync(
    schema,
    `ALTER TABLE ${GOOD[0].keyspace}.${GOOD[0].table} WITH compression = ` +
      "{'class': 'LZ4Compressor'};\n",
  );
  const bad = await cli(...upgradeCommand(dataDir, schema, keys.configFile), '-j', 'two');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--jobs takes a whole number from 1 to 64, not "two"/);
  t.is(process.listenerCount('SIGINT'), 0, 'no signal handler left behind');
  const good = await cli(...upgradeCommand(dataDir, schema, keys.configFile), '--jobs', '2', '-a');
  t.is(good.code, 0, good.stderr);
  t.regex(good.stdout, /1 rewritten, 0 unchanged, 0 skipped, 0 failed/);
});

test(
  'jobs: a caller whose onEvent throws gets the error only once every rewrite under way has ' +
    'ended, with the lock held until then and nothing half done',
  async (t) => {
    const expected = await originals();
    const table = LZ4_TABLE;
    const dataDir = makeDataDir((c) => c.table === table.table);
    const dir = path.join(dataDir, table.keyspace, table.table);
    addCopies(dir);
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const schema = parseSchema(
      `ALTER TABLE ${table.keyspace}.${table.table} WITH compression = ` +
        "{'class': 'EncryptingLZ4Compressor'};",
    );
    let starts = 0;
    await t.throwsAsync(
      () =>
        upgradeSSTables({
          dataDir,
          config: keys.config,
          schema,
          jobs: 3,
          onEvent: (e) => {
            if (e.type === 'start' && ++starts === 2) throw new Error('observer gone');
          },
        }),
      { message: 'observer gone' },
    );
    t.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.log')),
      [],
      'no transaction log is left',
    );
    t.false(fs.existsSync(path.join(dataDir, '.sstable-tde.lock')), 'the lock is released');
    const live = scanTableDirectory(dir).sstables;
    t.is(live.length, 3);
    for (const files of live)
      t.true(
        (await readAll(files, keys.config)).equals(
          expected.get(`${table.keyspace}.${table.table}`)!,
        ),
      );
  },
);
