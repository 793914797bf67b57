/**
 * Reads an encrypted SSTable without any of this package's reading code: only the DSE layout
 * (CompressionInfo.db offsets, chunk = [IV][AES-CBC ciphertext], compress-then-encrypt, 4-byte
 * CRC32 after each chunk), the key file line, Node's crypto and lz4-napi.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';
import * as lz4 from 'lz4-napi';

import { createKeyFile } from '../src/keys/key-file';
import { upgradeSSTables } from '../src/rewrite/upgrade';
import { parseSchema } from '../src/schema/cql';
import { makeDataDir, makeKeySetup } from './helpers';

/** CompressionInfo.db as sstable-format.md §2 lays it out (nb: with max compressed length). */
function compressionInfo(buf: Buffer, hasMax: boolean) {
  let at = 0;
  const str = () => {
    const n = buf.readUInt16BE(at);
    const s = buf.toString('utf8', at + 2, at + 2 + n);
    at += 2 + n;
    return s;
  };
  const className = str();
  const options: Record<string, string> = {};
  const count = buf.readInt32BE(at);
  at += 4;
  for (let i = 0; i < count; i++) options[str()] = str();
  const chunkLength = buf.readInt32BE(at);
  at += 4;
  if (hasMax) at += 4;
  const dataLength = Number(buf.readBigInt64BE(at));
  at += 8;
  const chunks = buf.readInt32BE(at);
  at += 4;
  const offsets = Array.from({ length: chunks }, (_, i) => Number(buf.readBigInt64BE(at + 8 * i)));
  return { className, options, chunkLength, dataLength, offsets };
}

/** Chunks of a Data.db, checking each one's trailing CRC32. */
function chunksOf(data: Buffer, offsets: number[]): Buffer[] {
  return offsets.map((o, i) => {
    const end = (i + 1 < offsets.length ? offsets[i + 1] : data.length) - 4;
    const chunk = data.subarray(o, end);
    if (zlib.crc32(chunk) !== data.readUInt32BE(end)) throw new Error(`chunk ${i} checksum`);
    return chunk;
  });
}

test(
  "an encrypted Data.db decrypts with only the DSE layout, the key file and Node's " + 'crypto',
  async (t) => {
    const dataDir = makeDataDir((c) => c.table === 'legacy_nb_clust');
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const dir = path.join(dataDir, 'legacy_tables', 'legacy_nb_clust');

    // The original, decoded independently too: LZ4 chunks with a 4-byte little-endian length.
    const plainInfo = compressionInfo(
      fs.readFileSync(path.join(dir, 'nb-1-big-CompressionInfo.db')),
      true,
    );
    const original = Buffer.concat(
      chunksOf(fs.readFileSync(path.join(dir, 'nb-1-big-Data.db')), plainInfo.offsets).map((c) =>
        lz4.uncompressSync(c),
      ),
    );
    t.is(original.length, plainInfo.dataLength);

    const report = await upgradeSSTables({
      dataDir,
      config: keys.config,
      schema: parseSchema(
        `ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = {'class': ` +
          `'EncryptingLZ4Compressor', 'cipher_algorithm': 'AES/CBC/PKCS5Padding', ` +
          `'secret_key_strength': 128, 'chunk_length_kb': 64};`,
      ),
    });
    t.is(report.rewritten, 1);

    // The key file: one line ALG/MODE/PADDING:BITS:BASE64KEY.
    const [transformation, bits, b64] = fs
      .readFileSync(path.join(keys.dir, 'system_key'), 'utf8')
      .trim()
      .split(':');
    t.is(transformation, 'AES/CBC/PKCS5Padding');
    t.is(bits, '128');
    const key = Buffer.from(b64, 'base64');

    const info = compressionInfo(
      fs.readFileSync(path.join(dir, 'nb-2-big-CompressionInfo.db')),
      true,
    );
    t.is(info.className, 'EncryptingLZ4Compressor');
    t.is(info.options.cipher_algorithm, 'AES/CBC/PKCS5Padding');
    t.is(info.chunkLength, 65536);
    const decoded = chunksOf(fs.readFileSync(path.join(dir, 'nb-2-big-Data.db')), info.offsets).map(
      (chunk) => {
        const decipher = crypto.createDecipheriv('aes-128-cbc', key, chunk.subarray(0, 16));
        const compressed = Buffer.concat([decipher.update(chunk.subarray(16)), decipher.final()]);
        return lz4.uncompressSync(compressed);
      },
    );
    t.true(Buffer.concat(decoded).equals(original));

    // The digest covers Data.db as stored.
    const digest = fs.readFileSync(path.join(dir, 'nb-2-big-Digest.crc32'), 'utf8');
    t.is(Number(digest), zlib.crc32(fs.readFileSync(path.join(dir, 'nb-2-big-Data.db'))));
  },
);
