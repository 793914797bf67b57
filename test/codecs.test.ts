/**
 * The chunk codecs: the addon's (system liblz4, libz, libsnappy) and the npm fallbacks. The
 * addon's LZ4 and Deflate write what Cassandra writes, byte for byte; each side reads the other's
 * output; hostile chunks give typed errors naming the chunk.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';
import fc from 'fast-check';

import { CODECS, codecFor, CodecName } from '../src/compression/codecs';
import { isTdeError } from '../src/errors';
import { createKeyFile } from '../src/keys/key-file';
import { native } from '../src/native';
import { upgradeSSTables } from '../src/rewrite/upgrade';
import { parseSchema } from '../src/schema/cql';
import { componentPath } from '../src/sstable/descriptor';
import { inspectSSTable } from '../src/sstable/inspect';
import {
  corpusTables,
  CORRUPT_TABLES,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
} from './helpers';

const GOOD = corpusTables().filter((t) => !CORRUPT_TABLES.has(t.table));
const CODEC_OF: Record<string, CodecName> = {
  LZ4Compressor: 'LZ4',
  DeflateCompressor: 'Deflate',
  SnappyCompressor: 'Snappy',
};
const where = (i: number) => ({ prefix: `chunk ${i}`, context: { chunk: i } });

test(
  'every corpus table encrypted and decrypted ' + 'back comes out as the Data.db Cassandra wrote',
  async (t) => {
    const dataDir = makeDataDir();
    const keys = makeKeySetup();
    createKeyFile(keys.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);

    // Each table's class and chunk length, and its files as Cassandra wrote them.
    const before = new Map<
      string,
      {
        cls: string | undefined;
        kb: number;
        files: Map<string, Buffer>;
        data: Buffer;
      }
    >();
    for (const table of GOOD) {
      const files = onlySSTable(path.join(dataDir, table.keyspace, table.table));
      const s = inspectSSTable(files);
      before.set(table.table, {
        cls: s.params.className,
        kb: s.chunkLength / 1024,
        files: new Map(
          ['Data.db', ...files.components.filter((c) => c.startsWith('Digest.'))].map((c) => [
            c,
            fs.readFileSync(componentPath(files, c)),
          ]),
        ),
        data: await readAll(files),
      });
    }
    const schema = (encrypt: boolean) =>
      parseSchema(
        GOOD.map((table) => {
          const { cls, kb } = before.get(table.table)!;
          const codec = cls ? CODEC_OF[cls] : undefined;
          const compression = encrypt
            ? `{'class': 'Encrypting${codec ?? 'LZ4'}Compressor', 'chunk_length_kb': ${kb}}`
            : cls
              ? `{'class': '${cls}', 'chunk_length_kb': ${kb}}`
              : `{'enabled': false}`;
          return `ALTER TABLE ${table.keyspace}.${table.table} WITH compression = ${compression};`;
        }).join('\n'),
      );

    t.is((await upgradeSSTables({ dataDir, config: keys.config, schema: schema(true) })).failed, 0);
    t.is(
      (await upgradeSSTables({ dataDir, config: keys.config, schema: schema(false) })).failed,
      0,
    );

    let compared = 0;
    for (const table of GOOD) {
      const { cls, files, data } = before.get(table.table)!;
      const codec = cls ? CODEC_OF[cls] : undefined;
      const after = onlySSTable(path.join(dataDir, table.keyspace, table.table));
      t.true((await readAll(after)).equals(data), `${table.table}: uncompressed data`);
      if (codec && !native().codecAvailable(codec)) {
        t.log(
          `${table.table}: no system library for ${codec} here; the npm codec's bytes may differ`,
        );
        continue;
      }
      if (codec === 'Snappy') {
        // Snappy-java carries its own Snappy, and Snappy releases compress differently (Debian
        // 12's libsnappy 1.1.9 writes the corpus chunk a byte shorter): the same data, other bytes.
        t.log(`${table.table}: libsnappy's bytes may differ from the Snappy inside snappy-java`);
        continue;
      }
      for (const [component, bytes] of files) {
        t.true(
          fs.readFileSync(componentPath(after, component)).equals(bytes),
          `${table.table} ${component}`,
        );
      }
      compared++;
    }
    t.true(compared >= GOOD.length - 1, `${compared} of ${GOOD.length} tables compared`);
  },
);

/** Chunks that compress some (text-like runs) and some not (random bytes), of many lengths. */
const chunkArb = fc
  .record({ length: fc.integer({ min: 0, max: 70000 }), seed: fc.integer(), noise: fc.boolean() })
  .map(({ length, seed, noise }) => {
    const b = noise ? crypto.randomBytes(length) : Buffer.alloc(length);
    if (!noise)
      for (let i = 0; i < length; i++)
        b[i] = 'partition key, clustering, value '.charCodeAt((i + seed) % 33);
    return b;
  });

for (const name of ['LZ4', 'Deflate', 'Snappy'] as CodecName[]) {
  test(`${name}: the addon and the npm codec read each other's chunks`, async (t) => {
    if (!native().codecAvailable(name)) {
      t.log(`no system library for ${name} here: only the npm codec runs`);
      t.false(codecFor(name).native);
      return;
    }
    const ours = codecFor(name);
    t.true(ours.native);
    const theirs = CODECS[name];
    await fc.assert(
      fc.asyncProperty(fc.array(chunkArb, { minLength: 1, maxLength: 12 }), async (chunks) => {
        const lengths = chunks.map((c) => c.length);
        const a = await ours.compress(chunks);
        const b = await theirs.compress(chunks);
        const fromOurs = await theirs.uncompress(a, lengths, where);
        const fromTheirs = await ours.uncompress(b, lengths, where);
        ours.recycle?.(a);
        return chunks.every((c, i) => fromOurs[i].equals(c) && fromTheirs[i].equals(c));
      }),
      { numRuns: 40 },
    );
    t.pass();
  });

  test(
    `${name}: hostile chunks give ERR_TDE_CORRUPT_CHUNK naming the chunk, never a ` + `crash`,
    async (t) => {
      const codec = codecFor(name);
      const [good, nothing] = await codec.compress([Buffer.alloc(5000, 7), Buffer.alloc(0)]);
      const cases: [string, Buffer, number][] = [
        ['truncated', good.subarray(0, good.length >> 1), 5000],
        ['empty', Buffer.alloc(0), 5000],
        ['wrong expected length', good, 4999],
        ['random bytes', crypto.randomBytes(300), 5000],
        ['claims a huge length', Buffer.from([0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]), 5000],
      ];
      for (const [what, chunk, length] of cases) {
        // Chunk 0 is fine: the error must name chunk 1.
        const err = await t.throwsAsync(
          codec.uncompress([nothing, chunk], [0, length], where),
          undefined,
          what,
        );
        if (err === undefined) continue;
        t.true(isTdeError(err, 'ERR_TDE_CORRUPT_CHUNK'), `${what}: ${err.message}`);
        t.regex(err.message, /^chunk 1: /, what);
      }
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ maxLength: 2000 }),
          fc.integer({ min: 0, max: 1 << 20 }),
          async (bytes, length) => {
            try {
              const [out] = await codec.uncompress([Buffer.from(bytes)], [length], where);
              return out.length === length;
            } catch (err) {
              return isTdeError(err, 'ERR_TDE_CORRUPT_CHUNK');
            }
          },
        ),
        { numRuns: 300 },
      );
      t.pass();
    },
  );
}

test('SSTABLE_TDE_NATIVE_CODECS=0 selects the npm codecs, which still round-trip', async (t) => {
  const was = process.env.SSTABLE_TDE_NATIVE_CODECS;
  process.env.SSTABLE_TDE_NATIVE_CODECS = '0';
  try {
    for (const name of ['LZ4', 'Deflate', 'Snappy'] as CodecName[]) {
      const codec = codecFor(name);
      t.false(codec.native, name);
      const chunk = Buffer.from('a chunk of rows '.repeat(300));
      const [out] = await codec.uncompress(await codec.compress([chunk]), [chunk.length], where);
      t.true(out.equals(chunk), name);
    }
  } finally {
    if (was === undefined) delete process.env.SSTABLE_TDE_NATIVE_CODECS;
    else process.env.SSTABLE_TDE_NATIVE_CODECS = was;
  }
});
