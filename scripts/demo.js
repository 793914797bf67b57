#!/usr/bin/env node
/**
 * The main job on real input: takes the Cassandra-written SSTables bundled in test/fixtures,
 * makes a fresh local system key, encrypts every table with upgradesstables, verifies, and
 * decrypts back, printing each command as an operator would type it. Finally it checks that the
 * data read back is byte-identical to the original.
 *
 *   npm run demo [-- --keep]     (--keep leaves the work directory for a look around)
 */
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const bin = path.join(root, 'bin', 'sstable-tde.js');
const corpus = path.join(root, 'test', 'fixtures', 'sstables');
const tde = require(path.join(root, 'dist', 'index.js'));

// The two deliberately damaged corpus tables are shown at the end, not rewritten.
const DAMAGED = new Set(['lz4_invalid_checksums', 'lz4_invalid_digest']);

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-demo-'));
const dataDir = path.join(work, 'data');
const keyDir = path.join(work, 'keys');

function step(title) {
  process.stdout.write(`\n== ${title}\n`);
}

function sstableTde(...args) {
  const shown = args.map((a) => (a.startsWith(work) ? path.relative(work, a) || '.' : a));
  process.stdout.write(`$ sstable-tde ${shown.join(' ')}\n`);
  try {
    const out = execFileSync(process.execPath, [bin, ...args], { cwd: work, encoding: 'utf8' });
    process.stdout.write(out.split(work + path.sep).join(''));
    return 0;
  } catch (err) {
    process.stdout.write(
      String(err.stdout || '')
        .split(work + path.sep)
        .join(''),
    );
    process.stdout.write(
      String(err.stderr || '')
        .split(work + path.sep)
        .join(''),
    );
    return err.status;
  }
}

async function uncompressedData(config) {
  const keys = new tde.KeyProviders(config);
  const out = new Map();
  for (const t of tde.findTables(dataDir)) {
    const [files] = tde.liveSSTables(t.dir).sstables;
    const reader = await tde.SSTableReader.open(files, { keys });
    const parts = [];
    for await (const batch of reader.batches()) parts.push(...batch);
    await reader.close();
    out.set(`${t.keyspace}.${t.table}`, Buffer.concat(parts));
  }
  keys.close();
  return out;
}

/**
 * Each live SSTable's index and metadata components (the ones holding partition keys), by table.
 */
function indexComponents() {
  const out = new Map();
  for (const t of tde.findTables(dataDir)) {
    const [files] = tde.liveSSTables(t.dir).sstables;
    const parts = tde.SENSITIVE_COMPONENTS[files.format].filter((c) =>
      files.components.includes(c),
    );
    out.set(
      `${t.keyspace}.${t.table}`,
      new Map(parts.map((c) => [c, fs.readFileSync(tde.componentPath(files, c))])),
    );
  }
  return out;
}

async function main() {
  step(`Copy the bundled Cassandra SSTables into a data directory: ${work}/data`);
  const tables = [];
  for (const format of fs
    .readdirSync(corpus)
    .filter((f) => !f.includes('.'))
    .sort()) {
    for (const keyspace of fs.readdirSync(path.join(corpus, format))) {
      for (const table of fs.readdirSync(path.join(corpus, format, keyspace))) {
        if (DAMAGED.has(table)) continue;
        const dest = path.join(dataDir, keyspace, table);
        fs.mkdirSync(dest, { recursive: true });
        for (const f of fs.readdirSync(path.join(corpus, format, keyspace, table))) {
          fs.copyFileSync(path.join(corpus, format, keyspace, table, f), path.join(dest, f));
          fs.chmodSync(path.join(dest, f), 0o644);
        }
        tables.push({ format, keyspace, table });
      }
    }
  }
  process.stdout.write(
    `${tables.length} tables, formats ${[...new Set(tables.map((t) => t.format))].join(', ')}\n`,
  );
  const config = tde.configFromObject({ system_key_directory: keyDir });
  const original = await uncompressedData(config);
  const originalIndexes = indexComponents();

  step('Make a local system key and a dse.yaml that points at it');
  const dseYaml = path.join(work, 'dse.yaml');
  fs.writeFileSync(dseYaml, 'system_key_directory: keys\n');
  process.stdout.write('dse.yaml: system_key_directory: keys\n');
  if (sstableTde('createsystemkey', 'AES/CBC/PKCS5Padding', '128', '-d', keyDir) !== 0)
    process.exit(1);

  step(
    'Ask for encryption: ALTER TABLE ... WITH compression = EncryptingLZ4Compressor, ' +
      'AES/CBC/PKCS5Padding 128',
  );
  const schema = (compression) =>
    tables
      .map((t) => `ALTER TABLE ${t.keyspace}.${t.table} WITH compression = ${compression};`)
      .join('\n') + '\n';
  const encrypt = path.join(work, 'encrypt.cql');
  fs.writeFileSync(
    encrypt,
    schema(
      "{'class': 'EncryptingLZ4Compressor', 'cipher_algorithm': " +
        "'AES/CBC/PKCS5Padding', 'secret_key_strength': 128, 'system_key_file': 'system_key', " +
        "'chunk_length_kb': 64}",
    ),
  );
  process.stdout.write(fs.readFileSync(encrypt, 'utf8').split('\n')[0] + '\n...\n');

  step('Encrypt: rewrite every SSTable offline');
  if (
    sstableTde(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      encrypt,
      '--config',
      dseYaml,
    ) !== 0
  )
    process.exit(1);

  step('Verify every chunk, checksum and digest, decrypting with the key');
  if (sstableTde('verify', '--data-dir', dataDir, '--config', dseYaml) !== 0) process.exit(1);

  step('Describe one encrypted SSTable (no key needed, none shown)');
  sstableTde('describe', '--data-dir', dataDir, 'legacy_tables', 'legacy_nb_clust');

  step('Decrypt back to LZ4Compressor');
  const decrypt = path.join(work, 'decrypt.cql');
  fs.writeFileSync(decrypt, schema("{'class': 'LZ4Compressor'}"));
  if (
    sstableTde(
      'upgradesstables',
      '--data-dir',
      dataDir,
      '--schema',
      decrypt,
      '--config',
      dseYaml,
    ) !== 0
  )
    process.exit(1);
  if (sstableTde('verify', '--data-dir', dataDir, '--config', dseYaml) !== 0) process.exit(1);

  step('Compare the uncompressed data with the original, table by table');
  const after = await uncompressedData(config);
  let same = 0;
  for (const [name, data] of original) {
    if (after.get(name)?.equals(data)) same++;
    else process.stdout.write(`DIFFERENT: ${name}\n`);
  }
  process.stdout.write(
    `${same} of ${original.size} tables byte-identical to the original after encrypt and decrypt\n`,
  );
  let sameIndexes = 0;
  for (const [name, components] of indexComponents()) {
    const before = originalIndexes.get(name);
    if ([...components].every(([c, bytes]) => before.get(c)?.equals(bytes))) sameIndexes++;
    else process.stdout.write(`DIFFERENT index or metadata: ${name}\n`);
  }
  process.stdout.write(
    `${sameIndexes} of ${original.size} tables with Index/Summary/Partitions/Rows/Statistics ` +
      'byte-identical too (they were encrypted page by page in between)\n',
  );

  step('A deliberately damaged corpus table is reported, not rewritten');
  const damaged = path.join(work, 'damaged');
  const src = path.join(corpus, 'me', 'test_ks', 'lz4_invalid_checksums');
  fs.mkdirSync(path.join(damaged, 'test_ks', 'lz4_invalid_checksums'), { recursive: true });
  for (const f of fs.readdirSync(src))
    fs.copyFileSync(path.join(src, f), path.join(damaged, 'test_ks', 'lz4_invalid_checksums', f));
  sstableTde('verify', '--data-dir', damaged, '--config', dseYaml);

  if (process.argv.includes('--keep')) process.stdout.write(`\nwork directory kept: ${work}\n`);
  else fs.rmSync(work, { recursive: true, force: true });
  process.exit(same === original.size && sameIndexes === original.size ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${err.stack || err}\n`);
  process.exit(1);
});
