/**
 * The three chunk codecs Cassandra writes, in its chunk framing (sstable-format.md §4):
 *
 * - LZ4: a 4-byte little-endian uncompressed length, then a raw LZ4 block (lz4-napi's own framing).
 * - Deflate: a zlib stream (header, deflate data, Adler-32 trailer), as java.util.zip.Deflater
 *   writes with its defaults. Node's zlib is the same zlib Java uses, so output is byte-identical.
 * - Snappy: a raw Snappy block, which starts with its own varint length.
 *
 * Every decoder checks the length a chunk claims before decoding it, so a hostile chunk can never
 * make us allocate more than one chunk's worth of memory.
 */
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

import type * as Lz4Napi from 'lz4-napi';
import type * as SnappyNpm from 'snappy';

import type { ChecksumType } from '../checksum';
import { ChunkLocator, fromNative, TdeError } from '../errors';
import { native } from '../native';
import { asSpans, SlabPool, viewsOf } from '../util/slabs';

// The npm codecs are loaded on first use: loading them (each looks up which C library the
// system has, to pick its binary) would cost every command some milliseconds where the addon's
// system codecs serve instead.
let lz4Module: typeof Lz4Napi | undefined;
let snappyModule: typeof SnappyNpm | undefined;
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const lz4Napi = (): typeof Lz4Napi => (lz4Module ??= require('lz4-napi') as typeof Lz4Napi);
// eslint-disable-next-line @typescript-eslint/no-require-imports
const snappy = (): typeof SnappyNpm => (snappyModule ??= require('snappy') as typeof SnappyNpm);

export type CodecName = 'LZ4' | 'Deflate' | 'Snappy' | 'None';

/** Stored chunks, with each one's checksum when asked for and computed on the way. */
export type EncodedChunks = Buffer[] & { sums?: Uint32Array };

export interface Codec {
  readonly name: CodecName;
  /** True when the addon runs this codec (see {@link codecFor}). */
  readonly native: boolean;
  /**
   * With `sums`, a native codec also gives each compressed chunk's checksum of that kind (the
   * result's `sums`), computed while the chunk is still in cache; others may not.
   */
  compress(chunks: Buffer[], options?: { sums?: ChecksumType }): Promise<EncodedChunks>;
  /**
   * Each chunk must decode to exactly `lengths[i]` bytes, or a TdeError names it. With `crc`,
   * a native codec also gives each plain chunk's CRC32 (the result's `crcs`); others may not.
   */
  uncompress(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    options?: { crc?: boolean },
  ): Promise<Buffer[] & { crcs?: Uint32Array }>;
  /**
   * Takes back the memory of a compress() or uncompress() result once its user is done with
   * every buffer of it, for the next batch to reuse (optional to call).
   */
  recycle?(batch: Buffer[]): void;
}

/**
 * The most each codec can expand what it stores, by its format: an LZ4 sequence turns each
 * extension byte into 255 bytes of match, Deflate stops at 1032:1, a Snappy copy makes at most
 * 64 bytes from 3. A chunk that claims more than that (plus a little for headers) cannot decode
 * to it: it is refused before any memory is set aside for the claim.
 */
const MAX_EXPANSION: Record<CodecName, number> = { LZ4: 256, Deflate: 1040, Snappy: 24, None: 1 };

/** Whether `stored` bytes of `codec` output can decode to `plain` bytes at all. */
export function plausibleLength(codec: CodecName, stored: number, plain: number): boolean {
  return plain <= stored * MAX_EXPANSION[codec] + 64;
}

/**
 * Refuses, before any memory is set aside for them, chunks that cannot decode to the length
 * expected of them (see {@link plausibleLength}); `codec` is what the chunk holds once
 * decrypted, `overhead` what encryption adds around it.
 */
export function checkPlausible(
  codec: CodecName,
  chunks: Uint8Array[],
  lengths: number[],
  where: ChunkLocator,
  overhead = 0,
): void {
  for (let i = 0; i < chunks.length; i++) {
    if (!plausibleLength(codec, Math.max(0, chunks[i].length - overhead), lengths[i])) {
      throw corrupt(
        where,
        i,
        `a ${chunks[i].length}-byte ${codec} chunk cannot hold ${lengths[i]} bytes of ` +
          'data: the chunk, or the chunk length in CompressionInfo.db, is damaged',
      );
    }
  }
}

const deflate = promisify(zlib.deflate);
const inflate = promisify(zlib.inflate);

function corrupt(where: ChunkLocator, i: number, what: string, cause?: unknown): TdeError {
  const at = where(i);
  return new TdeError('ERR_TDE_CORRUPT_CHUNK', `${at.prefix}: ${what}`, at.context, cause);
}

async function eachChunk(
  chunks: Buffer[],
  fn: (chunk: Buffer, i: number) => Promise<Buffer>,
): Promise<Buffer[]> {
  return Promise.all(chunks.map(fn));
}

const lz4Codec: Codec = {
  name: 'LZ4',
  native: false,
  compress: (chunks) => eachChunk(chunks, (c) => lz4Napi().compress(c)),
  uncompress: (chunks, lengths, where) =>
    eachChunk(chunks, async (c, i) => {
      if (c.length < 4)
        throw corrupt(where, i, `LZ4 chunk of ${c.length} bytes has no length prefix`);
      const claimed = c.readUInt32LE(0);
      if (!plausibleLength('LZ4', c.length, claimed)) {
        throw corrupt(
          where,
          i,
          `LZ4 chunk of ${c.length} bytes claims ${claimed} uncompressed ` +
            'bytes, more than LZ4 can produce from it: the chunk, or the chunk length in ' +
            'CompressionInfo.db, is damaged',
        );
      }
      if (claimed !== lengths[i]) {
        throw corrupt(
          where,
          i,
          `LZ4 chunk claims ${claimed} uncompressed bytes where ${lengths[i]} were expected`,
        );
      }
      let out: Buffer;
      try {
        out = await lz4Napi().uncompress(c);
      } catch (err) {
        throw corrupt(where, i, 'LZ4 block does not decode', err);
      }
      if (out.length !== lengths[i]) {
        throw corrupt(where, i, `LZ4 block decodes to ${out.length} bytes, not ${lengths[i]}`);
      }
      return out;
    }),
};

const deflateCodec: Codec = {
  name: 'Deflate',
  native: false,
  compress: (chunks) => eachChunk(chunks, (c) => deflate(c)),
  uncompress: (chunks, lengths, where) =>
    eachChunk(chunks, async (c, i) => {
      let out: Buffer;
      try {
        // One byte of headroom, so a stream that runs long is caught as too long.
        out = await inflate(c, { maxOutputLength: Math.max(1, lengths[i] + 1) });
      } catch (err) {
        throw corrupt(where, i, `zlib stream does not decode (${(err as Error).message})`, err);
      }
      if (out.length !== lengths[i]) {
        throw corrupt(where, i, `zlib stream decodes to ${out.length} bytes, not ${lengths[i]}`);
      }
      return out;
    }),
};

/** Reads Snappy's varint preamble; undefined when it is malformed. */
function snappyLength(c: Buffer): number | undefined {
  let value = 0;
  for (let i = 0, shift = 0; i < 5 && i < c.length; i++, shift += 7) {
    value += (c[i] & 0x7f) * 2 ** shift;
    if ((c[i] & 0x80) === 0) return value;
  }
  return undefined;
}

const snappyCodec: Codec = {
  name: 'Snappy',
  native: false,
  compress: (chunks) => eachChunk(chunks, (c) => snappy().compress(c)),
  uncompress: (chunks, lengths, where) =>
    eachChunk(chunks, async (c, i) => {
      const claimed = snappyLength(c);
      if (claimed !== undefined && !plausibleLength('Snappy', c.length, claimed)) {
        throw corrupt(
          where,
          i,
          `Snappy chunk of ${c.length} bytes claims ${claimed} ` +
            'uncompressed bytes, more than Snappy can produce from it: the chunk, or the chunk ' +
            'length in CompressionInfo.db, is damaged',
        );
      }
      if (claimed !== lengths[i]) {
        throw corrupt(
          where,
          i,
          claimed === undefined
            ? 'Snappy chunk has no valid length preamble'
            : `Snappy chunk claims ${claimed} uncompressed bytes where ${lengths[i]} were expected`,
        );
      }
      let out: Buffer;
      try {
        out = (await snappy().uncompress(c, { asBuffer: true })) as Buffer;
      } catch (err) {
        throw corrupt(where, i, 'Snappy block does not decode', err);
      }
      if (out.length !== lengths[i]) {
        throw corrupt(where, i, `Snappy block decodes to ${out.length} bytes, not ${lengths[i]}`);
      }
      return out;
    }),
};

/** `Encryptor` compresses nothing: the chunk is encrypted as it is. */
const noneCodec: Codec = {
  name: 'None',
  native: false,
  compress: async (chunks) => chunks,
  uncompress: async (chunks, lengths, where) => {
    chunks.forEach((c, i) => {
      if (c.length !== lengths[i]) {
        throw corrupt(where, i, `chunk holds ${c.length} bytes where ${lengths[i]} were expected`);
      }
    });
    return chunks;
  },
};

/** The npm implementations: used where the addon cannot run a codec (no system library). */
export const CODECS: Record<CodecName, Codec> = {
  LZ4: lz4Codec,
  Deflate: deflateCodec,
  Snappy: snappyCodec,
  None: noneCodec,
};

/**
 * The codec in the addon, on its thread pool, through the system's own libraries: liblz4 and
 * libz, the ones Cassandra reaches through lz4-java and java.util.zip, so chunks come out byte
 * for byte as Cassandra writes them (the npm implementations compress differently), and
 * libsnappy where installed. Results are carved from memory that recycle() gives back.
 */
class NativeCodec implements Codec {
  readonly native = true;
  private readonly slabs = new SlabPool();
  private readonly decoded = new SlabPool();
  private readonly bounds = new Map<number, number>();

  constructor(readonly name: Exclude<CodecName, 'None'>) {}

  private bound(length: number): number {
    let n = this.bounds.get(length);
    if (n === undefined) {
      n = native().codecBound(this.name, length);
      if (this.bounds.size < 64) this.bounds.set(length, n);
    }
    return n;
  }

  async compress(chunks: Buffer[], options: { sums?: ChecksumType } = {}): Promise<EncodedChunks> {
    const sizes = new Uint32Array(chunks.length);
    for (let i = 0; i < chunks.length; i++) sizes[i] = this.bound(chunks[i].length);
    const out = this.slabs.carveSpans(sizes);
    const sums = options.sums ?? null;
    const result = await native().codecEncodeInto(this.name, asSpans(chunks), out, sums);
    const stored: EncodedChunks = viewsOf(out, result.subarray(0, chunks.length));
    if (sums) stored.sums = result.subarray(chunks.length);
    return stored;
  }

  async uncompress(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    options: { crc?: boolean } = {},
  ): Promise<Buffer[] & { crcs?: Uint32Array }> {
    checkPlausible(this.name, chunks, lengths, where);
    const sizes = Uint32Array.from(lengths);
    const spans = this.decoded.carveSpans(sizes);
    let result: Uint32Array;
    try {
      result = await native().codecDecodeInto(
        this.name,
        asSpans(chunks),
        sizes,
        spans,
        options.crc === true,
      );
    } catch (err) {
      throw fromNative(err, (i) => (i === undefined ? { prefix: `${this.name} codec` } : where(i)));
    }
    const outputs: Buffer[] & { crcs?: Uint32Array } = viewsOf(spans);
    if (options.crc) outputs.crcs = result.subarray(chunks.length);
    return outputs;
  }

  recycle(batch: Buffer[]): void {
    this.slabs.recycle(batch);
    this.decoded.recycle(batch);
  }
}

const nativeCodecs = new Map<CodecName, Codec>();

/**
 * The codec to use for `name`: the addon's where its library is installed, unless the
 * environment sets SSTABLE_TDE_NATIVE_CODECS=0 (benchmarks compare both), else the npm
 * implementation. Each reads the other's output.
 */
export function codecFor(name: CodecName): Codec {
  if (
    name === 'None' ||
    process.env.SSTABLE_TDE_NATIVE_CODECS === '0' ||
    !native().codecAvailable(name)
  ) {
    return CODECS[name];
  }
  let codec = nativeCodecs.get(name);
  if (!codec) nativeCodecs.set(name, (codec = new NativeCodec(name)));
  return codec;
}
