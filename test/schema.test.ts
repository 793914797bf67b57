import test from 'ava';

import { parseTableCompression } from '../src/compression/options';
import { parseSchema } from '../src/schema/cql';

test("the DSE documentation's CREATE and ALTER statements parse, both option spellings", (t) => {
  const tables = parseSchema(
    `
    CREATE TABLE cycling.customers (id uuid PRIMARY KEY, name text) WITH COMPRESSION = { ` +
      `'class': 'Encryptor',
      'key_provider': 'KmipKeyProviderFactory', 'kmip_host': 'kmip_group_name', ` +
      `'cipher_algorithm': 'AES/ECB/PKCS5Padding',
      'secret_key_strength': 128 };
    ALTER TABLE cycling.riders WITH compression = { ` +
      `'sstable_compression': 'EncryptingDeflateCompressor',
      'cipher_algorithm': 'AES/CBC/PKCS5Padding', 'secret_key_strength': 256, ` +
      `'chunk_length_kb': 128 };
    ALTER TABLE cycling.teams WITH compression = { ` +
      `'class': 'LZ4Compressor', 'chunk_length_in_kb': '16' };
  `,
    'schema.cql',
  );
  t.deepEqual([...tables.keys()], ['cycling.customers', 'cycling.riders', 'cycling.teams']);
  t.is(tables.get('cycling.customers')!.compression!.kmip_host, 'kmip_group_name');
  t.is(tables.get('cycling.customers')!.source, 'schema.cql:2');

  const riders = parseTableCompression(tables.get('cycling.riders')!.compression!, 65536);
  t.is(riders.className, 'EncryptingDeflateCompressor');
  t.is(riders.chunkLength, 128 * 1024);
  t.is(riders.encryption!.strength, 256);
  t.is(riders.encryption!.systemKeyFile, 'system_key');
  t.is(parseTableCompression(tables.get('cycling.teams')!.compression!, 65536).chunkLength, 16384);
});

test('a DESC KEYSPACE dump with USE, comments, other options and clustering order parses', (t) => {
  const tables = parseSchema(
    `
    CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '1'} ` +
      ` AND durable_writes = true;
    USE ks; -- default keyspace from here on
    /* a block
       comment */
    CREATE TABLE IF NOT EXISTS "MixedCase" (
        k int, c text, v map<text, frozen<list<int>>>, PRIMARY KEY (k, c)
    ) WITH CLUSTERING ORDER BY (c DESC)
        AND bloom_filter_fp_chance = 0.01
        AND caching = {'keys': 'ALL', 'rows_per_partition': 'NONE'}
        AND comment = 'it''s a table; with a semicolon'
        AND compression = {'chunk_length_in_kb': '64', ` +
      `'class': 'org.apache.cassandra.io.compress.LZ4Compressor'}
        AND id = 5a1c395e-b41f-11e5-9f22-ba0be0483c18
        AND default_time_to_live = 0;
    CREATE TABLE plain (k int PRIMARY KEY);
    CREATE INDEX ON plain (k);
  `,
  );
  const mixed = tables.get('ks.MixedCase')!;
  t.is(mixed.compression!.class, 'org.apache.cassandra.io.compress.LZ4Compressor');
  t.is(parseTableCompression(mixed.compression!, 16384).className, 'LZ4Compressor');
  t.is(tables.get('ks.plain')!.compression, undefined);
});

test('a later ALTER TABLE overrides the CREATE TABLE compression', (t) => {
  const tables = parseSchema(`
    CREATE TABLE a.b (k int PRIMARY KEY) WITH compression = {'class': 'LZ4Compressor'};
    ALTER TABLE a.b ADD v text;
    ALTER TABLE a.b WITH compression = {'class': 'EncryptingLZ4Compressor'} AND comment = 'x';
  `);
  t.is(tables.get('a.b')!.compression!.class, 'EncryptingLZ4Compressor');
});

test('schema errors name the file and line', (t) => {
  t.throws(() => parseSchema('\n\nALTER TABLE nokeyspace WITH compression = {};', 'x.cql'), {
    code: 'ERR_TDE_SCHEMA',
    message: /x\.cql:3: .*no keyspace/,
  });
  t.throws(
    () => parseSchema("ALTER TABLE a.b WITH compression = {'class' 'LZ4Compressor'};", 'y.cql'),
    { message: /y\.cql:1: expected ":"/ },
  );
  t.throws(() => parseSchema("ALTER TABLE a.b WITH compression = {'class': 'x", 'z.cql'), {
    message: /never closed/,
  });
});

test('compression options: defaults, disabled compression, and helpful errors', (t) => {
  const enc = parseTableCompression({ class: 'EncryptingLZ4Compressor' }, 16384);
  t.is(enc.encryption!.cipherAlgorithm, 'AES/CBC/PKCS5Padding');
  t.is(enc.encryption!.strength, 128);
  t.is(enc.chunkLength, 16384);
  t.false(parseTableCompression({ enabled: 'false' }, 16384).enabled);
  t.throws(() => parseTableCompression({ class: 'LZ4Compresor' }, 16384), {
    code: 'ERR_TDE_UNKNOWN_COMPRESSOR',
    message: /did you mean "LZ4Compressor"/,
  });
  t.throws(() => parseTableCompression({ class: 'ZstdCompressor' }, 16384), {
    code: 'ERR_TDE_UNSUPPORTED',
  });
  t.throws(() => parseTableCompression({ class: 'LZ4Compressor', chunk_length_kb: 3 }, 16384), {
    message: /power of two/,
  });
  t.throws(
    () => parseTableCompression({ class: 'LZ4Compressor', cipher_algorithm: 'AES' }, 16384),
    { message: /only apply to the encrypting classes/ },
  );
  t.throws(
    () => parseTableCompression({ class: 'Encryptor', system_key_file: '../../etc/passwd' }, 16384),
    { message: /not a path/ },
  );
  t.throws(
    () =>
      parseTableCompression(
        { class: 'Encryptor', key_provider: 'ReplicatedKeyProviderFactory' },
        16384,
      ),
    { code: 'ERR_TDE_UNSUPPORTED' },
  );
  t.throws(
    () =>
      parseTableCompression({ class: 'Encryptor', key_provider: 'KmipKeyProviderFactory' }, 16384),
    { message: /needs kmip_host/ },
  );
});

test('schema typos that would leave a table as it is are errors, not skipped statements', (t) => {
  const cases: [string, RegExp][] = [
    [
      "ALTER TABLE a.b WITH compresion = {'class': 'Encryptor'};",
      /unknown table option "compresion" \(did you mean "compression"\?\)/,
    ],
    ["ALTER TABLE a.b WITH compresssion = {'class': 'Encryptor'};", /did you mean "compression"/],
    ["ALTER TABLE a.b compression = {'class': 'Encryptor'};", /expected WITH before "compression"/],
    [
      "ALTER KEYSPACE a WITH compression = {'class': 'Encryptor'};",
      /compression is a table option, but this is ALTER KEYSPACE/,
    ],
    ["ALTER TYPE a.b WITH compression = {'class': 'Encryptor'};", /compression is a table option/],
    [
      "ALTER TABLE a.b WITH compression = {'class': 'Encryptor'} AND compression = {'class': " +
        "'LZ4Compressor'};",
      /compression is given twice/,
    ],
  ];
  for (const [cql, message] of cases)
    t.throws(() => parseSchema(cql, 'x.cql'), { code: 'ERR_TDE_SCHEMA', message }, cql);
  t.throws(
    () =>
      parseTableCompression({ class: 'EncryptingLZ4Compressor', CLASS: 'LZ4Compressor' }, 16384),
    { message: /given twice/ },
  );
  t.throws(
    () => parseTableCompression({ class: 'Encryptor', sstable_compression: 'Encryptor' }, 16384),
    { message: /either class or sstable_compression/ },
  );
  t.throws(
    () =>
      parseTableCompression(
        { class: 'LZ4Compressor', chunk_length_kb: 16, chunk_length_in_kb: 16 },
        16384,
      ),
    { message: /either chunk_length_kb or chunk_length_in_kb/ },
  );
});
