/**
 * Hostile bytes, by property-based fuzzing (fast-check): every parser of untrusted input either
 * gives a valid result or throws a TdeError whose code is one of a few expected ones; never
 * another exception, a crash or a hang (the ava timeout would fail it).
 *
 * Inputs are real files mutated: the corpus CompressionInfo.db and Data.db files (plain and
 * encrypted copies), the KMIP TTLV vectors, key files, a dse.yaml, and key stores in JKS, PKCS12,
 * PEM and JCEKS. Mutations know the formats' length fields, so counts, lengths and offsets get
 * extreme values (0, negative, 2^31 - 1, beyond the file) as well as random flips and cuts.
 *
 * Runs are bounded for `npm test`; `node scripts/fuzz.js [SCALE]` multiplies them (FUZZ_SCALE),
 * and FUZZ_SEED replays a run.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';
import fc from 'fast-check';

import { hintsFileNames, HintsWriter, readHintsFile } from '../src/commitlog/hints';
import { keyStoreResolver } from '../src/commitlog/keys';
import { readSegment } from '../src/commitlog/segment';
import { readConfig } from '../src/config/config';
import { ErrorCodeName, isTdeError, TdeError } from '../src/errors';
import { JavaStreamReader } from '../src/config/java-serial';
import { readJceksSecretKey } from '../src/config/jceks';
import { loadStore } from '../src/config/keystore';
import { encryptValue, loadConfig } from '../src/config/secure-values';
import { createChunkCipher } from '../src/cipher/chunk-cipher';
import { createKeyFile, parseKeyFile, readKeyFile } from '../src/keys/key-file';
import { KeyProviders } from '../src/keys/provider';
import { ttlv } from '../src/index';
import { parseCompressionInfo, serializeCompressionInfo } from '../src/sstable/compression-info';
import { featuresOf, SSTableFiles } from '../src/sstable/descriptor';
import { SSTableReader } from '../src/sstable/reader';
import {
  cli,
  corpusTables,
  FIXTURES,
  makeDataDir,
  makeKeySetup,
  onlySSTable,
  readAll,
  tempDir,
} from './helpers';

const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)), seed: SEED });

/** An input as text for a failure message: bigints in decimal, bytes in hex. */
const show = (x: unknown) =>
  JSON.stringify(x, (_, v) =>
    typeof v === 'bigint'
      ? String(v)
      : v instanceof Uint8Array
        ? Buffer.from(v).toString('hex')
        : v,
  );

/** The property: `fn` returns, or throws a TdeError with one of `codes`. Anything else fails. */
function typedOrOk(codes: readonly ErrorCodeName[], what: () => string) {
  return (err: unknown): void => {
    if (isTdeError(err) && codes.includes(err.code)) return;
    const e = err as Error;
    if (process.env.FUZZ_DEBUG)
      console.error(
        `unexpected ${isTdeError(err) ? err.code : e?.constructor?.name}: ${e?.message}`,
      );
    throw new Error(
      `${what()}: unexpected ${isTdeError(err) ? err.code : e?.constructor?.name}: ` +
        `${e?.message}\n${e?.stack}`,
    );
  };
}

// ---- Mutations --------------------------------------------------------------------------------

type Op =
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'int32'; at: number; value: number }
  | { kind: 'int64'; at: number; value: bigint }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'zero'; at: number; length: number }
  | { kind: 'copy'; from: number; at: number; length: number };

const INT32 = fc.oneof(
  fc.constantFrom(0, 1, -1, 4, 0x7fffffff, -0x80000000, 0x40000000, 0xffff, 0x10000),
  fc.integer(),
);
const INT64 = fc.oneof(
  fc.constantFrom(0n, 1n, -1n, 2n ** 31n, 2n ** 53n, 2n ** 63n - 1n, -(2n ** 63n)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
);

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('flip' as const),
    at: fc.nat(),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant('int32' as const), at: fc.nat(), value: INT32 }),
  fc.record({ kind: fc.constant('int64' as const), at: fc.nat(), value: INT64 }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 64 }),
  }),
  fc.record({
    kind: fc.constant('zero' as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 4096 }),
  }),
  fc.record({
    kind: fc.constant('copy' as const),
    from: fc.nat(),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 4096 }),
  }),
);
const ops = fc.array(op, { minLength: 1, maxLength: 4 });

function mutate(src: Buffer, list: Op[]): Buffer {
  let b = Buffer.from(src);
  for (const o of list) {
    const at = b.length === 0 ? 0 : o.at % b.length;
    switch (o.kind) {
      case 'flip':
        if (b.length > 0) b[at] ^= o.mask;
        break;
      case 'int32':
        if (at + 4 <= b.length) b.writeInt32BE(o.value | 0, at);
        break;
      case 'int64':
        if (at + 8 <= b.length) b.writeBigInt64BE(o.value, at);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), o.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + o.length)]);
        break;
      case 'zero':
        b.fill(0, at, Math.min(b.length, at + o.length));
        break;
      case 'copy':
        if (b.length > 0)
          b.copy(b, at, o.from % b.length, Math.min(b.length, (o.from % b.length) + o.length));
        break;
    }
  }
  return b;
}

// ---- TTLV -------------------------------------------------------------------------------------

const vectors: Buffer[] = JSON.parse(
  fs.readFileSync(path.join(FIXTURES, 'kmip-ttlv-vectors.json'), 'utf8'),
).map((v: { hex: string }) => Buffer.from(v.hex, 'hex'));

/** Byte offsets of every item header in a TTLV message, to aim length and type changes at. */
function ttlvHeaders(b: Buffer): number[] {
  const out: number[] = [];
  const walk = (at: number, end: number) => {
    while (at + 8 <= end) {
      out.push(at);
      const type = b[at + 3];
      const len = b.readUInt32BE(at + 4);
      if (type === 1) walk(at + 8, Math.min(end, at + 8 + len));
      at += 8 + Math.ceil(len / 8) * 8;
    }
  };
  walk(0, b.length);
  return out;
}

test('TTLV decoder: mutated messages decode or fail with ERR_TDE_TTLV', (t) => {
  const headerOp = fc.record({
    header: fc.nat(),
    field: fc.constantFrom('type', 'length'),
    value: fc.oneof(
      fc.constantFrom(0, 1, 7, 8, 0xfffffff8, 0xffffffff, 0x7fffffff),
      fc.nat({ max: 0xffffffff }),
    ),
  });
  const input = fc.oneof(
    fc
      .tuple(fc.constantFrom(...vectors), fc.array(headerOp, { maxLength: 3 }), fc.option(ops))
      .map(([v, hs, more]) => {
        const b = Buffer.from(v);
        const heads = ttlvHeaders(b);
        for (const h of hs) {
          const at = heads[h.header % heads.length];
          if (h.field === 'type') b[at + 3] = h.value & 0xff;
          else b.writeUInt32BE(h.value >>> 0, at + 4);
        }
        return more ? mutate(b, more) : b;
      }),
    fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  );
  fc.assert(
    fc.property(input, (bytes) => {
      try {
        ttlv.encode(ttlv.decode(bytes));
      } catch (err) {
        typedOrOk(['ERR_TDE_TTLV'], () => bytes.toString('hex'))(err);
      }
    }),
    runs(2000),
  );
  t.pass();
});

// ---- CompressionInfo.db -----------------------------------------------------------------------

interface CiSample {
  name: string;
  bytes: Buffer;
  hasMax: boolean;
}

const ciSamples: CiSample[] = corpusTables().flatMap((c) =>
  fs
    .readdirSync(c.dir)
    .filter((f) => f.endsWith('-CompressionInfo.db'))
    .map((f) => ({
      name: `${c.table}/${f}`,
      bytes: fs.readFileSync(path.join(c.dir, f)),
      hasMax: featuresOf({ version: f.slice(0, 2), format: f.includes('-bti-') ? 'bti' : 'big' })
        .hasMaxCompressedLength,
    })),
);

/** Offsets of CompressionInfo.db's fields in a well-formed file. */
function ciFields(b: Buffer, hasMax: boolean) {
  let at = 2 + b.readUInt16BE(0);
  const optionCount = at;
  const n = b.readInt32BE(at);
  at += 4;
  const strings: number[] = [];
  for (let i = 0; i < 2 * n; i++) {
    strings.push(at);
    at += 2 + b.readUInt16BE(at);
  }
  const chunkLength = at;
  at += 4;
  const max = hasMax ? at : undefined;
  if (hasMax) at += 4;
  const dataLength = at;
  const count = at + 8;
  return { optionCount, strings, chunkLength, max, dataLength, count, offsets: at + 12 };
}

type FieldOp =
  | {
      field: 'optionCount' | 'string' | 'chunkLength' | 'max' | 'count';
      index: number;
      value: number;
    }
  | { field: 'dataLength' | 'offset'; index: number; value: bigint };

const fieldOp: fc.Arbitrary<FieldOp> = fc.oneof(
  fc.record({
    field: fc.constantFrom(
      'optionCount' as const,
      'chunkLength' as const,
      'max' as const,
      'count' as const,
    ),
    index: fc.nat(),
    value: INT32,
  }),
  fc.record({
    field: fc.constant('string' as const),
    index: fc.nat(),
    value: fc.oneof(fc.constantFrom(0, 1, 0xffff), fc.nat({ max: 0xffff })),
  }),
  fc.record({
    field: fc.constantFrom('dataLength' as const, 'offset' as const),
    index: fc.nat(),
    value: INT64,
  }),
);

function mutateCi(s: CiSample, fields: FieldOp[], more: Op[] | null): Buffer {
  const b = Buffer.from(s.bytes);
  const f = ciFields(b, s.hasMax);
  for (const o of fields) {
    if (o.field === 'dataLength') b.writeBigInt64BE(o.value, f.dataLength);
    else if (o.field === 'offset') {
      const n = (b.length - f.offsets) / 8;
      if (n > 0) b.writeBigInt64BE(o.value, f.offsets + 8 * (o.index % n));
    } else if (o.field === 'string') {
      if (f.strings.length > 0) b.writeUInt16BE(o.value, f.strings[o.index % f.strings.length]);
    } else {
      const at = o.field === 'max' ? f.max : f[o.field];
      if (at !== undefined) b.writeInt32BE(o.value | 0, at);
    }
  }
  return more ? mutate(b, more) : b;
}

const ciInput = fc.tuple(
  fc.constantFrom(...ciSamples),
  fc.array(fieldOp, { minLength: 1, maxLength: 3 }),
  fc.option(ops, { freq: 3 }),
);

test(
  'CompressionInfo.db parser: chunk length 0, counts and offsets beyond the file, negative ' +
    'lengths give ERR_TDE_CORRUPT_COMPRESSION_INFO',
  (t) => {
    t.true(ciSamples.length >= 15);
    fc.assert(
      fc.property(ciInput, ([s, fields, more]) => {
        const bytes = mutateCi(s, fields, more);
        try {
          const info = parseCompressionInfo(bytes, s.name, s.hasMax);
          // A result must describe a file that could exist: sizes that fit the bytes given.
          if (info.chunkLength <= 0 || (info.chunkLength & (info.chunkLength - 1)) !== 0)
            throw new Error('bad chunk length');
          if (info.chunkOffsets.length !== Math.ceil(info.dataLength / info.chunkLength))
            throw new Error('bad count');
          if (info.chunkOffsets.length * 8 > bytes.length)
            throw new Error('offsets beyond the file');
          info.chunkOffsets.forEach((o, i) => {
            if (o < 0 || (i > 0 && o < info.chunkOffsets[i - 1] + 4))
              throw new Error('offsets out of order');
          });
        } catch (err) {
          typedOrOk(['ERR_TDE_CORRUPT_COMPRESSION_INFO'], () => `${s.name}: ${show(fields)}`)(err);
        }
      }),
      runs(3000),
    );
    t.pass();
  },
);

// ---- SSTables read through the reader: damaged CompressionInfo.db and Data.db ------------------

/** What a damaged SSTable may fail with when read or verified. */
const READ_CODES: ErrorCodeName[] = [
  'ERR_TDE_CORRUPT_COMPRESSION_INFO',
  'ERR_TDE_CORRUPT_CRC',
  'ERR_TDE_CHUNK_CHECKSUM',
  'ERR_TDE_CORRUPT_CHUNK',
  'ERR_TDE_DIGEST_MISMATCH',
  'ERR_TDE_DECRYPT_FAILED',
  'ERR_TDE_INTEGRITY',
  'ERR_TDE_WRONG_KEY',
  'ERR_TDE_CHUNK_LENGTH',
  // CompressionInfo.db's options name the class, cipher and key: damage there reads as these.
  'ERR_TDE_UNKNOWN_COMPRESSOR',
  'ERR_TDE_BAD_OPTION',
  'ERR_TDE_UNKNOWN_CIPHER',
  'ERR_TDE_KEY_STRENGTH',
  'ERR_TDE_UNSUPPORTED',
  'ERR_TDE_KEY_FILE',
  'ERR_TDE_KEY_NOT_FOUND',
  'ERR_TDE_CONFIG',
];

interface Table {
  label: string;
  dir: string;
  original: Buffer;
  authenticated: boolean;
}

let tables: Table[] = [];
let keys: KeyProviders;
let scratch: string;

test.before(async () => {
  const pick = [
    'legacy_nb_clust',
    'legacy_da_clust',
    'legacy_me_clust',
    'pk_types_deflate',
    'simple_uncompressed',
    'pk_types_snappy',
  ];
  const dataDir = makeDataDir((c) => pick.includes(c.table));
  const k = makeKeySetup();
  createKeyFile(k.dir, 'system_key', 'AES/CBC/PKCS5Padding', 128);
  createKeyFile(k.dir, 'gcm_key', 'AES/GCM/NoPadding', 256);
  const keyspaceOf = new Map(corpusTables().map((c) => [c.table, c.keyspace]));
  const dirOf = (table: string) => path.join(dataDir, keyspaceOf.get(table)!, table);
  const originals = new Map<string, Buffer>();
  for (const table of pick) originals.set(table, await readAll(onlySSTable(dirOf(table))));
  const schema = path.join(k.dir, 's.cql');
  fs.writeFileSync(
    schema,
    [
      'ALTER TABLE legacy_tables.legacy_nb_clust WITH compression = ' +
        "{'class': 'EncryptingLZ4Compressor', 'chunk_length_kb': 4};",
      'ALTER TABLE legacy_tables.legacy_da_clust WITH compression = ' +
        "{'class': 'EncryptingSnappyCompressor', 'chunk_length_kb': 4, " +
        "'cipher_algorithm': 'AES/GCM/NoPadding', 'secret_key_strength': 256, " +
        "'system_key_file': 'gcm_key'};",
      'ALTER TABLE test_ks.pk_types_snappy WITH compression = ' +
        "{'class': 'Encryptor', 'cipher_algorithm': 'AES/CTR/NoPadding'};",
    ].join('\n'),
  );
  const r = await cli(
    'upgradesstables',
    '--data-dir',
    dataDir,
    '--schema',
    schema,
    '--config',
    k.configFile,
  );
  if (r.code !== 0) throw new Error(r.stdout + r.stderr);
  keys = new KeyProviders(k.config);
  tables = pick.map((table) => ({
    label: table,
    dir: dirOf(table),
    original: originals.get(table)!,
    authenticated: table === 'legacy_da_clust',
  }));
  scratch = tempDir('fuzz');
});
test.after.always(() => keys?.close());

let copies = 0;
/** A private copy of a table's directory for one run, removed by the caller. */
function copyOf(table: Table): string {
  const dir = path.join(scratch, `run-${copies++}`);
  fs.cpSync(table.dir, dir, { recursive: true });
  return dir;
}

function componentFile(files: SSTableFiles, component: string): string {
  return path.join(files.dir, `${files.version}-${files.generation}-${files.format}-${component}`);
}

/**
 * Opens, verifies and reads a (damaged) SSTable. Returns the verify faults and the data read,
 * or the error that stopped it; throws if anything fails in a way a damaged file must not cause.
 */
async function readDamaged(
  files: SSTableFiles,
  what: () => string,
): Promise<{ faults: string[]; data?: Buffer; error?: string }> {
  const check = typedOrOk(READ_CODES, what);
  let reader: SSTableReader | undefined;
  try {
    reader = await SSTableReader.open(files, { keys });
    const digest = files.components.find((c) => c.startsWith('Digest.'));
    const report = await reader.verify(digest);
    for (const f of report.faults) check(new TdeError(f.code, f.message));
    let data: Buffer | undefined;
    try {
      const parts: Buffer[] = [];
      for await (const batch of reader.batches()) parts.push(...batch);
      data = Buffer.concat(parts);
    } catch (err) {
      check(err);
    }
    return { faults: report.faults.map((f) => f.code), data };
  } catch (err) {
    check(err);
    return { faults: [], error: (err as Error).message };
  } finally {
    await reader?.close();
  }
}

test(
  'CompressionInfo.db damaged in place: opening, verifying and reading give typed errors; a ' +
    'clean verify means the original data',
  async (t) => {
    const compressed = () =>
      tables.filter((tb) => onlySSTable(tb.dir).components.includes('CompressionInfo.db'));
    await fc.assert(
      fc.asyncProperty(
        fc.nat(),
        fc.array(fieldOp, { minLength: 1, maxLength: 2 }),
        fc.option(ops, { freq: 2 }),
        async (which, fields, more) => {
          const table = compressed()[which % compressed().length];
          const dir = copyOf(table);
          try {
            const files = onlySSTable(dir);
            const file = componentFile(files, 'CompressionInfo.db');
            const sample = {
              name: file,
              bytes: fs.readFileSync(file),
              hasMax: featuresOf(files).hasMaxCompressedLength,
            };
            fs.writeFileSync(file, mutateCi(sample, fields, more));
            const r = await readDamaged(files, () => `${table.label}: ${show(fields)}`);
            if (r.error === undefined && r.faults.length === 0 && !r.data!.equals(table.original)) {
              throw new Error(`${table.label}: verify found nothing, yet the data read differs`);
            }
          } finally {
            fs.rmSync(dir, { recursive: true, force: true });
          }
        },
      ),
      runs(120),
    );
    t.pass();
  },
);

type Damage =
  | { kind: 'bytes'; ops: Op[] }
  | { kind: 'swap'; i: number; j: number }
  | { kind: 'duplicate'; i: number; j: number }
  | { kind: 'zero-chunk'; i: number };

const damage: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({ kind: fc.constant('bytes' as const), ops }),
  fc.record({ kind: fc.constant('swap' as const), i: fc.nat(), j: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), i: fc.nat(), j: fc.nat() }),
  fc.record({ kind: fc.constant('zero-chunk' as const), i: fc.nat() }),
);

/** Data.db's chunk regions, each with its checksum: CompressionInfo.db's, or 64 KiB slices. */
function chunkRegions(files: SSTableFiles, size: number): [number, number][] {
  if (!files.components.includes('CompressionInfo.db')) {
    const out: [number, number][] = [];
    for (let at = 0; at < size; at += 65536) out.push([at, Math.min(size, at + 65536)]);
    return out;
  }
  const info = parseCompressionInfo(
    fs.readFileSync(componentFile(files, 'CompressionInfo.db')),
    'ci',
    featuresOf(files).hasMaxCompressedLength,
  );
  return info.chunkOffsets.map((o, i) => [
    o,
    i + 1 < info.chunkOffsets.length ? info.chunkOffsets[i + 1] : size,
  ]);
}

function damageData(data: Buffer, regions: [number, number][], d: Damage): Buffer {
  if (d.kind === 'bytes') return mutate(data, d.ops);
  const [a0, a1] = regions[d.i % regions.length];
  if (d.kind === 'zero-chunk')
    return Buffer.concat([data.subarray(0, a0), Buffer.alloc(a1 - a0), data.subarray(a1)]);
  const [b0, b1] = regions[d.j % regions.length];
  const [x, y] =
    a0 <= b0
      ? [
          [a0, a1],
          [b0, b1],
        ]
      : [
          [b0, b1],
          [a0, a1],
        ];
  if (x[0] === y[0]) return data;
  const first = data.subarray(x[0], x[1]);
  const second = data.subarray(y[0], y[1]);
  const mid = data.subarray(x[1], y[0]);
  if (d.kind === 'swap')
    return Buffer.concat([data.subarray(0, x[0]), second, mid, first, data.subarray(y[1])]);
  // duplicate: the first chunk's bytes in place of the second's
  return Buffer.concat([data.subarray(0, y[0]), first, data.subarray(y[1])]);
}

test(
  'Data.db truncated, swapped, flipped, zero-filled: verify reports it, reads fail typed; GCM ' +
    'never returns other data',
  async (t) => {
    await fc.assert(
      fc.asyncProperty(fc.nat(), damage, async (which, d) => {
        const table = tables[which % tables.length];
        const dir = copyOf(table);
        try {
          const files = onlySSTable(dir);
          const file = componentFile(files, 'Data.db');
          const data = fs.readFileSync(file);
          const damaged = damageData(data, chunkRegions(files, data.length), d);
          fs.writeFileSync(file, damaged);
          const r = await readDamaged(files, () => `${table.label}: ${show(d)}`);
          if (!damaged.equals(data) && r.error === undefined && r.faults.length === 0) {
            throw new Error(
              `${table.label}: Data.db was changed (${d.kind}) and verify found nothing`,
            );
          }
          if (table.authenticated && r.data && !r.data.equals(table.original)) {
            throw new Error(
              `${table.label}: a GCM SSTable returned data other than what was written (${d.kind})`,
            );
          }
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      runs(150),
    );
    t.pass();
  },
);

// ---- Key files --------------------------------------------------------------------------------

test('key files: damaged lines give ERR_TDE_KEY_FILE and never quote the key', (t) => {
  const lines = [
    'AES/CBC/PKCS5Padding:128:',
    'AES/GCM/NoPadding:256:',
    'DESede/CBC/PKCS5Padding:168:',
    'Blowfish:448:',
  ];
  const lengths = [16, 32, 24, 56];
  const keyFile = fc
    .tuple(
      fc.nat({ max: 3 }),
      fc.uint8Array({ minLength: 56, maxLength: 56 }),
      fc.string({ maxLength: 40 }),
      fc.nat(),
      fc.nat({ max: 3 }),
    )
    .map(([i, bytes, junk, at, how]) => {
      const key = Buffer.from(bytes.subarray(0, lengths[i])).toString('base64');
      const line = `${lines[i]}${key}`;
      const cut = at % (line.length + 1);
      // Text inserted, cut, fields reordered or a second line added.
      const text = [
        `${line.slice(0, cut)}${junk}${line.slice(cut)}`,
        line.slice(0, cut),
        line.split(':').reverse().join(':'),
        `${line}\n${junk}:${key}\n`,
      ][how];
      return { text, key };
    });
  fc.assert(
    fc.property(
      fc.oneof(
        keyFile,
        fc.string().map((text) => ({ text, key: '' })),
      ),
      ({ text, key }) => {
        try {
          for (const e of parseKeyFile(text, 'kf')) {
            if (e.key.length === 0) throw new Error('an empty key was accepted');
          }
        } catch (err) {
          typedOrOk(['ERR_TDE_KEY_FILE'], () => JSON.stringify(text))(err);
          const message = (err as Error).message;
          // No part of the key (any 12 characters of its base64) in the message.
          for (let i = 0; key.length >= 12 && i + 12 <= key.length; i++) {
            if (message.includes(key.slice(i, i + 12)))
              throw new Error(`the message quotes the key: ${message}`);
          }
        }
      },
    ),
    runs(3000),
  );

  // Whole files of random bytes, read from disk with their mode checks.
  const dir = tempDir('fuzzkeys');
  let n = 0;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const file = path.join(dir, `k${n++}`);
      fs.writeFileSync(file, bytes, { mode: 0o600 });
      try {
        readKeyFile(file);
      } catch (err) {
        typedOrOk(['ERR_TDE_KEY_FILE'], () => Buffer.from(bytes).toString('hex'))(err);
      } finally {
        fs.rmSync(file);
      }
    }),
    runs(200),
  );
  t.pass();
});

// ---- YAML configuration -----------------------------------------------------------------------

/** A dse.yaml in the DSE style, with an encrypted value; hosts that refuse at once. */
const dseYaml = (searchPassword: string) => `system_key_directory: keys
config_encryption_active: true
config_encryption_key_name: system_key
ldap_options:
  search_password: ${searchPassword}
kmip_hosts:
  g1:
    hosts: 127.0.0.1:1, 127.0.0.1:2
    keystore_path: ks.jks
    keystore_type: jks
    keystore_password: Zq8-not-a-real-password
    truststore_path: ts.jks
    truststore_type: jks
    truststore_password: Zq8-not-a-real-password
    key_cache_millis: 300000
    timeout: 1000
system_info_encryption:
  enabled: true
  cipher_algorithm: AES/CBC/PKCS5Padding
  secret_key_strength: 128
  key_provider: KmipKeyProviderFactory
  kmip_host: g1
  chunk_length_kb: 64
max_memory_to_lock_fraction: 0.20
`;

const cassandraYaml = (password: string) => `cluster_name: fuzz
server_encryption_options:
  internode_encryption: all
  keystore: conf/.keystore
  keystore_password: ${password}
client_encryption_options:
  enabled: true
  truststore_password: ${password}
`;

test(
  'YAML config (dse.yaml and cassandra.yaml): mutated text, odd values and aliases give ' +
    'ERR_TDE_CONFIG',
  async (t) => {
    const dir = tempDir('fuzzyaml');
    fs.writeFileSync(path.join(dir, 'ks.jks'), '');
    fs.writeFileSync(path.join(dir, 'ts.jks'), '');
    createKeyFile(path.join(dir, 'keys'), 'system_key', 'AES/CBC/PKCS5Padding', 128);
    const [entry] = readKeyFile(path.join(dir, 'keys', 'system_key'));
    const cipher = createChunkCipher({
      cipher_algorithm: entry.transformation,
      secret_key_strength: entry.strength,
      key: entry.key,
    });
    const dse = dseYaml(encryptValue(cipher, 'ldap-secret'));
    const cassandra = cassandraYaml(encryptValue(cipher, 'store-secret'));
    cipher.destroy();
    const file = path.join(dir, 'dse.yaml');
    fs.writeFileSync(file, dse);
    fs.writeFileSync(path.join(dir, 'cassandra.yaml'), cassandra);
    const loaded = await loadConfig(file);
    t.is((loaded.values.ldap_options as Record<string, string>).search_password, 'ldap-secret');
    t.is(
      (loaded.cassandra?.server_encryption_options as Record<string, string>).keystore_password,
      'store-secret',
    );

    const snippet = fc.constantFrom(
      '&a ',
      '*a',
      '<<: *a',
      '!!binary ',
      '!!map ',
      '[',
      ']',
      '{',
      '}',
      ':',
      ': ',
      '- ',
      '\n  ',
      '\n',
      '"',
      "'",
      '#',
      '? ',
      '|',
      '>',
      '%YAML 1.1\n---\n',
      '&a [*a]',
      '---\n',
      '...\n',
      '\t',
      '\\',
      '~',
      '0x',
      '1e400',
      'true',
      'null',
      'kmip://g1/1',
      '../',
    );
    const edit = fc.record({
      at: fc.nat(),
      cut: fc.nat({ max: 12 }),
      insert: fc.oneof(snippet, fc.string({ maxLength: 8 })),
    });
    const edited = (base: string) =>
      fc.array(edit, { minLength: 1, maxLength: 5 }).map((edits) =>
        edits.reduce((s, e) => {
          const at = e.at % (s.length + 1);
          return s.slice(0, at) + e.insert + s.slice(at + e.cut);
        }, base),
      );
    const text = fc.oneof(
      edited(dse),
      // Valid YAML with any values under the real setting names.
      fc
        .dictionary(
          fc.constantFrom(
            'system_key_directory',
            'config_encryption_active',
            'config_encryption_key_name',
            'kmip_hosts',
            'system_info_encryption',
            'ldap_options',
            'other',
          ),
          fc.jsonValue({ maxDepth: 3 }),
        )
        .map((o) => JSON.stringify(o)),
      fc
        .dictionary(
          fc.string({ maxLength: 6 }),
          fc.record(
            {
              hosts: fc.jsonValue({ maxDepth: 2 }),
              timeout: fc.jsonValue({ maxDepth: 1 }),
              key_cache_millis: fc.jsonValue({ maxDepth: 1 }),
              keystore_path: fc.jsonValue({ maxDepth: 1 }),
            },
            { requiredKeys: [] },
          ),
        )
        .map((g) => JSON.stringify({ kmip_hosts: g })),
    );
    await fc.assert(
      fc.asyncProperty(text, fc.option(edited(cassandra)), async (yaml, cassandraText) => {
        fs.writeFileSync(file, yaml);
        fs.writeFileSync(path.join(dir, 'cassandra.yaml'), cassandraText ?? cassandra);
        try {
          await loadConfig(file);
        } catch (err) {
          // A damaged value can name a key file that is not there, or a KMIP group whose hosts
          // refuse.
          typedOrOk(['ERR_TDE_CONFIG', 'ERR_TDE_KEY_FILE', 'ERR_TDE_KMIP_UNAVAILABLE'], () =>
            JSON.stringify([yaml, cassandraText]),
          )(err);
        }
      }),
      runs(1200),
    );
    t.pass();
  },
);

// ---- Key stores -------------------------------------------------------------------------------

/** A client key and certificate as PEM, PKCS12 and (with keytool) JKS, all with one password. */
function makeStores(dir: string) {
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: dir, stdio: 'pipe' });
  run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=fuzz',
    '-keyout',
    'k.pem',
    '-out',
    'c.pem',
  ]);
  run('openssl', [
    'pkcs12',
    '-export',
    '-passout',
    'pass:storepass',
    '-inkey',
    'k.pem',
    '-in',
    'c.pem',
    '-out',
    's.p12',
  ]);
  run('keytool', [
    '-importkeystore',
    '-noprompt',
    '-srcstoretype',
    'PKCS12',
    '-srckeystore',
    's.p12',
    '-srcstorepass',
    'storepass',
    '-deststoretype',
    'jks',
    '-destkeystore',
    's.jks',
    '-deststorepass',
    'storepass',
  ]);
  fs.writeFileSync(
    path.join(dir, 's.pem'),
    fs.readFileSync(path.join(dir, 'c.pem'), 'utf8') +
      fs.readFileSync(path.join(dir, 'k.pem'), 'utf8'),
  );
  return {
    jks: fs.readFileSync(path.join(dir, 's.jks')),
    p12: fs.readFileSync(path.join(dir, 's.p12')),
    pem: fs.readFileSync(path.join(dir, 's.pem')),
  };
}

/** Java's store digest (JKS and JCEKS), to let a mutated store through its integrity check. */
function withJavaDigest(body: Buffer, password: string): Buffer {
  const pw = Buffer.from([...password].flatMap((c) => [0, c.charCodeAt(0)]));
  const digest = createHash('sha1').update(pw).update('Mighty Aphrodite').update(body).digest();
  return Buffer.concat([body, digest]);
}

test('key stores: mutated JKS, PKCS12, PEM and JCEKS files give typed errors', (t) => {
  const dir = tempDir('fuzzstores');
  const stores = makeStores(dir);
  t.is(loadStore(path.join(dir, 's.jks'), 'jks', 'storepass', 'keystore', 'ks').certs.length, 1);

  const file = path.join(dir, 'store');
  const kinds = ['jks', 'pkcs12', 'pem'] as const;
  fc.assert(
    fc.property(fc.constantFrom(...kinds), ops, fc.boolean(), (kind, list, fixDigest) => {
      const source = kind === 'jks' ? stores.jks : kind === 'pkcs12' ? stores.p12 : stores.pem;
      let bytes = mutate(source, list);
      // Half the JKS runs get a valid digest, as if made by someone holding the password: the
      // parser itself then sees the damage.
      if (kind === 'jks' && fixDigest && bytes.length > 20)
        bytes = withJavaDigest(bytes.subarray(0, bytes.length - 20), 'storepass');
      fs.writeFileSync(file, bytes);
      try {
        loadStore(
          file,
          kind,
          'storepass',
          fixDigest ? 'keystore' : 'truststore',
          'kmip_hosts.g.keystore_path',
        );
      } catch (err) {
        typedOrOk(['ERR_TDE_CONFIG'], () => `${kind}: ${show(list)}`)(err);
      }
    }),
    runs(400),
  );

  const jceks = fs.readFileSync(path.join(FIXTURES, 'commitlog', 'cassandra.keystore'));
  fc.assert(
    fc.property(
      ops,
      fc.boolean(),
      fc.constantFrom('testing:1', 'Testing:2', 'none'),
      (list, fixDigest, alias) => {
        let bytes = mutate(jceks, list);
        if (fixDigest && bytes.length > 20)
          bytes = withJavaDigest(bytes.subarray(0, bytes.length - 20), 'cassandra');
        fs.writeFileSync(file, bytes);
        try {
          readJceksSecretKey(file, 'cassandra', alias);
        } catch (err) {
          typedOrOk(
            [
              'ERR_TDE_CONFIG',
              'ERR_TDE_KEYSTORE_PASSWORD',
              'ERR_TDE_KEY_NOT_FOUND',
              'ERR_TDE_UNSUPPORTED',
            ],
            () => show(list),
          )(err);
        }
      },
    ),
    runs(600),
  );
  t.pass();
});

// ---- Lengths claimed by the input never size an allocation ------------------------------------

test(
  'huge claimed lengths fail at once with a typed error, before anything is allocated for ' +
    'them',
  async (t) => {
    // CompressionInfo.db: 2^31 - 1 chunks (16 GiB of offsets) in a file of a few bytes.
    const ci = Buffer.concat([
      Buffer.from('\x00\x0dLZ4Compressor'),
      Buffer.from('00000000' + '00000001' + '000000007fffffff' + '7fffffff', 'hex'),
    ]);
    t.throws(() => parseCompressionInfo(ci, 'ci', false), {
      code: 'ERR_TDE_CORRUPT_COMPRESSION_INFO',
      message: /truncated: 2147483647 chunk offsets need 17179869176 bytes, 0 remain/,
    });
    const options = Buffer.concat([
      Buffer.from('\x00\x0dLZ4Compressor'),
      Buffer.from('7fffffff', 'hex'),
    ]);
    t.throws(() => parseCompressionInfo(options, 'ci', false), {
      message: /option count 2147483647 is not plausible/,
    });

    // Java serialization (JCEKS entries): a byte array and a long string of 2^31 - 1 bytes.
    const array = Buffer.from(
      'aced0005' +
        '75' +
        '72' +
        '0002' +
        Buffer.from('[B').toString('hex') +
        '0000000000000000' +
        '02' +
        '0000' +
        '78' +
        '70' +
        '7fffffff',
      'hex',
    );
    t.throws(() => new JavaStreamReader(array, 'entry').readStream(), {
      code: 'ERR_TDE_CONFIG',
      message: /ends 2147483647 bytes early/,
    });
    const long = Buffer.from('aced0005' + '7c' + '00000000' + '7fffffff', 'hex');
    t.throws(() => new JavaStreamReader(long, 'entry').readStream(), {
      code: 'ERR_TDE_CONFIG',
      message: /ends 2147483647 bytes early/,
    });

    // A Data.db chunk of a few bytes whose LZ4 or Snappy header claims 1 GiB, with a
    // CompressionInfo.db whose chunk length (1 GiB) agrees: refused before decompressing.
    const dir = tempDir('claims');
    for (const [cls, chunk] of [
      [
        'LZ4Compressor',
        Buffer.concat([Buffer.from('00000040', 'hex'), Buffer.from('1f00010000', 'hex')]),
      ],
      ['SnappyCompressor', Buffer.from('8080808004' + '00', 'hex')],
    ] as const) {
      const gen = cls === 'LZ4Compressor' ? '1' : '2';
      const sum = Buffer.alloc(4);
      sum.writeUInt32BE(zlib.crc32(chunk) >>> 0);
      fs.writeFileSync(path.join(dir, `nb-${gen}-big-Data.db`), Buffer.concat([chunk, sum]));
      fs.writeFileSync(
        path.join(dir, `nb-${gen}-big-CompressionInfo.db`),
        serializeCompressionInfo(
          {
            className: cls,
            options: {},
            chunkLength: 1 << 30,
            maxCompressedLength: 0x7fffffff,
            dataLength: 1 << 30,
            chunkOffsets: [0],
          },
          true,
        ),
      );
      const reader = await SSTableReader.open({
        dir,
        version: 'nb',
        generation: gen,
        format: 'big',
      });
      try {
        await t.throwsAsync(() => reader.readChunks(0, 1), {
          code: 'ERR_TDE_CORRUPT_CHUNK',
          // The npm codecs read the chunk's own claim; the addon's check the expected length.
          message: new RegExp(
            `chunk 0 .* (claims 1073741824 uncompressed bytes, more than ${cls.slice(0, -10)} ` +
              `can produce|${cls.slice(0, -10)} chunk cannot hold 1073741824 bytes)`,
          ),
        });
      } finally {
        await reader.close();
      }
    }
  },
);

test(
  'a config, cassandra.yaml, schema or store path naming a FIFO or a device is refused at ' +
    'once',
  async (t) => {
    const dir = tempDir('fifo');
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    for (const endless of [fifo, '/dev/zero']) {
      t.throws(() => readConfig(endless), {
        code: 'ERR_TDE_CONFIG',
        message: /is not a regular file/,
      });
      t.throws(
        () => loadStore(endless, 'pem', undefined, 'truststore', 'kmip_hosts.g.truststore_path'),
        { code: 'ERR_TDE_CONFIG', message: /is not a regular file/ },
      );
      t.throws(() => readJceksSecretKey(endless, 'pw', 'k'), {
        code: 'ERR_TDE_CONFIG',
        message: /is not a regular file/,
      });
      const r = await cli(
        'upgradesstables',
        '--data-dir',
        dir,
        '--schema',
        endless,
        '--config',
        path.join(dir, 'none.yaml'),
      );
      t.is(r.code, 1);
    }
    const schema = await cli('upgradesstables', '--data-dir', dir, '--schema', fifo);
    t.regex(schema.stderr, /ERR_TDE_SCHEMA\]: schema file .*fifo is not a regular file/);
    fs.writeFileSync(path.join(dir, 'dse.yaml'), 'system_key_directory: .\n');
    fs.symlinkSync(fifo, path.join(dir, 'cassandra.yaml'));
    await t.throwsAsync(() => loadConfig(path.join(dir, 'dse.yaml')), {
      code: 'ERR_TDE_CONFIG',
      message: /cassandra\.yaml .* is not a regular file/,
    });
  },
);

// ---- Commit log segments and hints ------------------------------------------------------------

test('commit log segments and hints files: damage is reported typed', async (t) => {
  const codes: ErrorCodeName[] = [
    'ERR_TDE_SEGMENT_HEADER',
    'ERR_TDE_SEGMENT_DAMAGED',
    'ERR_TDE_SEGMENT_TRUNCATED',
    'ERR_TDE_KEY_NOT_FOUND',
    'ERR_TDE_UNKNOWN_CIPHER',
    'ERR_TDE_UNSUPPORTED',
    'ERR_TDE_KEY_STRENGTH',
  ];
  const dir = tempDir('fuzzlog');

  // Cassandra 3.4's own encrypted segment, with the JCEKS store it was written with.
  const segment = fs.readFileSync(
    path.join(FIXTURES, 'commitlog', '3.4-encrypted', 'CommitLog-6-1480001790338.log'),
  );
  const resolver = keyStoreResolver({
    file: path.join(FIXTURES, 'commitlog', 'cassandra.keystore'),
    password: 'cassandra',
  });
  const file = path.join(dir, 'CommitLog-6-1480001790338.log');
  await fc.assert(
    fc.asyncProperty(ops, async (list) => {
      fs.writeFileSync(file, mutate(segment, list));
      try {
        const r = await readSegment(file, resolver);
        if (r.stoppedAt && !codes.includes(r.stoppedAt.code as ErrorCodeName))
          throw new Error(`stopped with ${r.stoppedAt.code}`);
      } catch (err) {
        typedOrOk(codes, () => show(list))(err);
      }
    }),
    runs(60),
  );

  // A hints file made by this package; its checksum file is fixed up half the time, so that the
  // damage reaches the decryption and the block parser.
  const names = hintsFileNames(dir, '0c4f3b9e-5b5a-4d1b-9c6e-2b1f0f3a7d11', 1733000000000);
  const key = Buffer.alloc(16, 9);
  const w = await HintsWriter.create(
    names,
    { hostId: '0c4f3b9e-5b5a-4d1b-9c6e-2b1f0f3a7d11', timestamp: 1733000000000 },
    { transformation: 'AES/CBC/PKCS5Padding', key, keyAlias: 'hints-key' },
    1024,
  );
  await w.write(
    Array.from({ length: 200 }, (_, i) => Buffer.from(`hint ${i} `.repeat((i % 9) + 1))),
  );
  await w.close();
  const data = fs.readFileSync(names.data);
  const descriptor = fs.readFileSync(names.descriptor);
  await fc.assert(
    fc.asyncProperty(
      ops,
      fc.boolean(),
      fc.option(ops, { freq: 4 }),
      async (list, fixCrc, descriptorOps) => {
        const damaged = mutate(data, list);
        fs.writeFileSync(names.data, damaged);
        fs.writeFileSync(
          names.crc,
          String(fixCrc ? zlib.crc32(damaged) >>> 0 : zlib.crc32(data) >>> 0),
        );
        fs.writeFileSync(
          names.descriptor,
          descriptorOps ? mutate(descriptor, descriptorOps) : descriptor,
        );
        try {
          await readHintsFile(names, async () => Buffer.from(key));
        } catch (err) {
          typedOrOk(codes, () =>
            JSON.stringify([list, descriptorOps], (_, v) =>
              typeof v === 'bigint' ? String(v) : v,
            ),
          )(err);
        }
      },
    ),
    runs(300),
  );
  t.pass();
});
