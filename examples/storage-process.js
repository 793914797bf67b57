#!/usr/bin/env node
// A small storage process on top of sstable-tde: it loads the plugin once, flushes a memtable as
// an encrypted SSTable (Data.db and an encrypted Index.db), reads partitions back by position,
// rotates its key, flushes again with the new key, and keeps reading the old SSTable.
//
//   node examples/storage-process.js [--dir DIR]                   local system key (made here)
//   node examples/storage-process.js --config dse.yaml --kmip GROUP   keys from a KMIP group
//
// Build first (npm install). Exits 0 when every read matched what was written, 1 otherwise.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const tde = require('sstable-tde');

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!['dir', 'config', 'kmip'].includes(name) || argv[i + 1] === undefined) {
      throw new Error(`usage: storage-process.js [--dir DIR] [--config dse.yaml --kmip GROUP]`);
    }
    args[name] = argv[i + 1];
  }
  if (Boolean(args.config) !== Boolean(args.kmip)) {
    throw new Error('--config and --kmip go together');
  }
  return args;
}

// A memtable: partition key -> value, as a storage engine would hold it before a flush.
function memtable(seed, partitions) {
  const rows = new Map();
  for (let i = 0; i < partitions; i++) {
    const key = `user:${seed}:${String(i).padStart(5, '0')}`;
    const visits = (i * 7919 + seed) % 1000;
    rows.set(key, `{"name":"user ${i}","visits":${visits},"note":"${'x'.repeat(i % 64)}"}`);
  }
  return rows;
}

// Data.db holds [u16 key length][key][u32 value length][value] per partition, in key order;
// Index.db maps each key to its partition's position, as Cassandra's index does.
function serialize(rows) {
  const parts = [];
  const index = [];
  let position = 0;
  for (const key of [...rows.keys()].sort()) {
    const k = Buffer.from(key);
    const v = Buffer.from(rows.get(key));
    const entry = Buffer.alloc(2 + k.length + 4 + v.length);
    entry.writeUInt16BE(k.length, 0);
    k.copy(entry, 2);
    entry.writeUInt32BE(v.length, 2 + k.length);
    v.copy(entry, 6 + k.length);
    parts.push(entry);
    index.push(`${key}\t${position}\t${entry.length}`);
    position += entry.length;
  }
  return { data: Buffer.concat(parts), index: Buffer.from(index.join('\n')) };
}

function decodePartition(bytes) {
  const keyLength = bytes.readUInt16BE(0);
  const key = bytes.subarray(2, 2 + keyLength).toString();
  const value = bytes.subarray(6 + keyLength, 6 + keyLength + bytes.readUInt32BE(2 + keyLength));
  return { key, value: value.toString() };
}

async function flush(plugin, dir, generation, rows, tableOptions) {
  const id = { dir, version: 'nb', generation: String(generation), format: 'big' };
  const { data, index } = serialize(rows);
  const writer = await plugin.createWriter(id, tableOptions);
  const key = writer.compressor.keyId;
  for (let at = 0; at < data.length; at += 8192) await writer.write(data.subarray(at, at + 8192));
  await writer.writeComponent('Index.db', index);
  const result = await writer.finish();
  console.log(
    `flushed ${rows.size} partitions to nb-${generation}-big (${result.dataLength} ` +
      `bytes of data, ${result.chunkCount} chunks, encrypted with ${key}): ` +
      result.components.join(', '),
  );
  return id;
}

// Looks partitions up through the encrypted index and reads each by its position in Data.db.
async function readBack(plugin, id, rows, sample) {
  const reader = await plugin.openReader(id);
  try {
    const indexFile = await reader.openComponent('Index.db');
    const index = new Map(
      (await indexFile.readAll())
        .toString()
        .split('\n')
        .map((line) => {
          const [key, position, length] = line.split('\t');
          return [key, { position: Number(position), length: Number(length) }];
        }),
    );
    await indexFile.close();
    const keys = [...rows.keys()].sort();
    let matched = 0;
    for (let i = 0; i < sample; i++) {
      const key = keys[Math.floor((i * keys.length) / sample)];
      const at = index.get(key);
      const partition = decodePartition(await reader.read(at.position, at.length));
      if (partition.key !== key || partition.value !== rows.get(key)) {
        throw new Error(
          `nb-${id.generation}: partition ${key} read back differs from what was ` + 'written',
        );
      }
      matched++;
    }
    console.log(`read ${matched} partitions of nb-${id.generation}-big by position: all match`);
  } finally {
    await reader.close();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const dir = args.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sstable-tde-example-'));
  const dataDir = path.join(dir, 'data', 'shop', 'users');
  fs.mkdirSync(dataDir, { recursive: true });

  let config;
  let tableOptions = {
    class: 'EncryptingLZ4Compressor',
    cipher_algorithm: 'AES/CBC/PKCS5Padding',
    secret_key_strength: 128,
    chunk_length_kb: 16,
  };
  if (args.kmip) {
    config = args.config;
    tableOptions = {
      ...tableOptions,
      key_provider: 'KmipKeyProviderFactory',
      kmip_host: args.kmip,
      key_namespace: 'storage-process-example',
    };
  } else {
    const keys = path.join(dir, 'keys');
    tde.createKeyFile(keys, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    config = { system_key_directory: keys };
  }

  const plugin = await tde.openPlugin({ config });
  // The library never prints; a storage process logs the events it cares about.
  plugin.on('keyRotated', (e) => {
    console.log(`event keyRotated: ${e.previous} -> ${e.key} (${e.purpose})`);
  });
  plugin.on('keyRevoked', (e) => console.log(`event keyRevoked: ${e.key} is ${e.state}`));
  plugin.on('integrityFailure', (e) => {
    console.log(`event integrityFailure: ${e.file} chunk ${e.chunk}`);
  });
  try {
    const first = memtable(1, 3000);
    const old = await flush(plugin, dataDir, 1, first, tableOptions);
    await readBack(plugin, old, first, 25);

    const rotation = await plugin.rotateKey(tableOptions);
    tableOptions = rotation.tableOptions;
    const previous = rotation.previous ?? '(none in use)';
    console.log(`rotated the table's key: ${previous} -> ${rotation.key}`);

    const second = memtable(2, 2000);
    const fresh = await flush(plugin, dataDir, 2, second, tableOptions);
    await readBack(plugin, fresh, second, 25);
    await readBack(plugin, old, first, 25);
    console.log('the SSTable written before the rotation still reads with its own key');

    console.log('metrics:');
    for (const line of tde.formatMetrics(plugin.metrics())) console.log(`  ${line}`);
  } finally {
    await plugin.close();
  }
  console.log(`closed; files are in ${dataDir}`);
}

main().catch((err) => {
  console.error(`storage-process: error${err.code ? ` [${err.code}]` : ''}: ${err.message}`);
  process.exitCode = 1;
});
