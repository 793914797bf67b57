/**
 * Chunk encryption in DSE's layout: each chunk is `[IV][ciphertext]`, with a fresh random IV per
 * chunk (16 bytes for AES, 8 for the 64-bit-block ciphers, none for ECB) and PKCS5 padding unless
 * the transformation says NoPadding. The work runs in the native addon, off the event loop.
 */
import type { ChecksumType } from '../checksum';
import { ChunkLocator, fromNative, TdeError } from '../errors';
import { native, NativeChunkCipher, NativeCodecName } from '../native';
import { asSpans, checkSpans, SlabPool, Spans, viewsOf } from '../util/slabs';
import { CipherChoice, normalizeKey, resolveCipher } from './transformation';

/**
 * A batch of chunks lying in one buffer: chunk i is `lengths[i]` bytes of `data` from byte
 * `offsets[i]`. The spans methods take and give batches in this form.
 */
export type ChunkSpans = Spans;

export interface ChunkCipherOptions {
  /** JCE transformation, for example `AES/CBC/PKCS5Padding`. */
  cipher_algorithm: string;
  /** Key strength in bits. */
  secret_key_strength: number | string;
  /** Raw key bytes. They are copied into native memory; the caller may wipe its copy at once. */
  key: Uint8Array;
  /** DSE's `iv_length` option; when given it must match the cipher's block size. */
  iv_length?: number | string;
  /**
   * Cassandra's commit log and hints layout: this one IV for every chunk, not stored before
   * each; chunks are then just ciphertext. (Weaker than a fresh IV per chunk: equal chunk
   * beginnings show as equal ciphertext. Only for reading and writing that format.)
   */
  fixed_iv?: Uint8Array;
}

const byIndex: ChunkLocator = (i) => ({ prefix: `chunk ${i} of the batch`, context: { chunk: i } });

function locate(where: ChunkLocator) {
  return (i: number | undefined) => (i === undefined ? { prefix: 'chunk cipher' } : where(i));
}

export class ChunkCipher {
  /** The cipher this object was made for (no key material). */
  readonly choice: CipherChoice;
  private handle: NativeChunkCipher | undefined;
  /** Batch output memory, reused once a caller gives it back through {@link recycle}. */
  private readonly slabs = new SlabPool();
  /** The same for decodeBatch's results, which usually live longer (until written elsewhere). */
  private readonly decoded = new SlabPool();
  /** encodedLength by codec and plain length: chunks of a table are mostly one length. */
  private readonly bounds = new Map<string, number>();

  /** @internal use {@link createChunkCipher}. */
  constructor(choice: CipherChoice, handle: NativeChunkCipher) {
    this.choice = choice;
    this.handle = handle;
  }

  /** Canonical transformation name, for example `AES/CBC/PKCS5Padding`. */
  get transformation(): string {
    return this.choice.name;
  }

  get ivLength(): number {
    return this.choice.ivLength;
  }

  /** True for authenticated modes (GCM), whose batches need additional data per chunk. */
  get aead(): boolean {
    return this.choice.tagLength > 0;
  }

  /** Size of a chunk of `plainLength` bytes once encrypted, IV and tag included. */
  encryptedLength(plainLength: number): number {
    checkLength(plainLength, 'encryptedLength: plainLength');
    const body =
      this.choice.padding === 'PKCS5Padding'
        ? (Math.floor(plainLength / this.choice.blockSize) + 1) * this.choice.blockSize
        : plainLength;
    return this.choice.ivLength + body + this.choice.tagLength;
  }

  /** Bytes a stored chunk adds to its plaintext at most: IV and tag (padding aside). */
  private get overhead(): number {
    return this.choice.ivLength + this.choice.tagLength;
  }

  /** Checks a Buffer[] batch's chunks and additional data before any of them is looked at. */
  private checkBatch(chunks: unknown, aad: unknown): void {
    checkBuffers(chunks, 'chunks');
    if (aad !== undefined) checkBuffers(aad, 'aad');
    this.checkAad(chunks as unknown[], aad as unknown[] | undefined);
  }

  private checkAad(chunks: ArrayLike<unknown>, aad: ArrayLike<unknown> | undefined): void {
    if (this.aead && (!aad || aad.length !== chunks.length)) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${this.choice.name} authenticates each chunk ` +
          'with additional data: pass one aad buffer per chunk ' +
          `(${aad ? aad.length : 'none'} for ${chunks.length} chunks)`,
      );
    }
    if (!this.aead && aad) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${this.choice.name} takes no additional data`,
      );
    }
  }

  private live(): NativeChunkCipher {
    if (!this.handle) {
      throw new TdeError(
        'ERR_TDE_CIPHER_DESTROYED',
        'this chunk cipher was destroyed; make a new one',
      );
    }
    return this.handle;
  }

  /** Encrypts one chunk. `aad` is required for GCM and refused otherwise. */
  async encrypt(chunk: Uint8Array, aad?: Uint8Array): Promise<Buffer> {
    return (await this.encryptBatch([chunk], byIndex, aad && [aad]))[0];
  }

  async decrypt(chunk: Uint8Array, aad?: Uint8Array): Promise<Buffer> {
    return (await this.decryptBatch([chunk], byIndex, aad && [aad]))[0];
  }

  /**
   * Encrypts many chunks in one call, spread over the addon's threads. The results share one
   * allocation, so keeping any of them keeps the whole batch's memory alive.
   */
  async encryptBatch(
    chunks: Uint8Array[],
    where: ChunkLocator = byIndex,
    aad?: Uint8Array[],
  ): Promise<Buffer[]> {
    const handle = this.live();
    this.checkBatch(chunks, aad);
    const sizes = new Uint32Array(chunks.length);
    for (let i = 0; i < chunks.length; i++) sizes[i] = this.encryptedLength(chunks[i].length);
    const out = this.slabs.carveSpans(sizes);
    try {
      const written = await handle.encryptInto(asSpans(chunks), out, aad && asSpans(aad));
      return viewsOf(out, written);
    } catch (err) {
      throw fromNative(err, locate(where));
    }
  }

  /** Decrypts many chunks in one call; each must be `[IV][ciphertext]` as encrypt wrote it. */
  async decryptBatch(
    chunks: Uint8Array[],
    where: ChunkLocator = byIndex,
    aad?: Uint8Array[],
  ): Promise<Buffer[]> {
    const handle = this.live();
    this.checkBatch(chunks, aad);
    const sizes = new Uint32Array(chunks.length);
    for (let i = 0; i < chunks.length; i++)
      sizes[i] = Math.max(0, chunks[i].length - this.overhead);
    const out = this.slabs.carveSpans(sizes);
    try {
      const written = await handle.decryptInto(asSpans(chunks), out, aad && asSpans(aad));
      return viewsOf(out, written);
    } catch (err) {
      throw fromNative(err, locate(where));
    }
  }

  /**
   * {@link encryptBatch} for chunks that lie in one buffer, with the results described the same
   * way: no object is made per chunk on either side, which on batches of small chunks (4 KiB) is
   * most of what the JS thread spends. The result's `lengths` are the encrypted lengths; its
   * `data` is this cipher's memory until given back through {@link recycleSpans}.
   */
  async encryptSpans(
    chunks: ChunkSpans,
    aad?: ChunkSpans,
    where: ChunkLocator = byIndex,
  ): Promise<ChunkSpans> {
    return this.runSpans(
      chunks,
      aad,
      where,
      (n) => this.encryptedLength(n),
      (h, out) => h.encryptInto(chunks, out, aad),
    );
  }

  /** {@link decryptBatch} in the form of {@link encryptSpans}. */
  async decryptSpans(
    chunks: ChunkSpans,
    aad?: ChunkSpans,
    where: ChunkLocator = byIndex,
  ): Promise<ChunkSpans> {
    return this.runSpans(
      chunks,
      aad,
      where,
      (n) => Math.max(0, n - this.overhead),
      (h, out) => h.decryptInto(chunks, out, aad),
    );
  }

  /** Checks a spans batch, carves its output (`room(n)` bytes for a chunk of n), runs `op`. */
  private async runSpans(
    chunks: ChunkSpans,
    aad: ChunkSpans | undefined,
    where: ChunkLocator,
    room: (length: number) => number,
    op: (handle: NativeChunkCipher, out: ChunkSpans) => Promise<Uint32Array>,
  ): Promise<ChunkSpans> {
    const handle = this.live();
    checkSpans(chunks, 'chunks');
    if (aad) checkSpans(aad, 'aad');
    this.checkAad(chunks.lengths, aad?.lengths);
    const sizes = new Uint32Array(chunks.lengths.length);
    for (let i = 0; i < sizes.length; i++) sizes[i] = room(chunks.lengths[i]);
    const out = this.slabs.carveSpans(sizes);
    try {
      out.lengths = await op(handle, out);
      return out;
    } catch (err) {
      this.slabs.recycleSlab(out.data.buffer);
      throw fromNative(err, locate(where));
    }
  }

  /**
   * Gives back the memory of a spans result, for the next batch to reuse: only once nothing
   * reads its `data` any more. Anything else (memory not from this cipher, a result given back
   * already, a destroyed cipher) is ignored.
   */
  recycleSpans(result: ChunkSpans): void {
    if (!this.handle || !(result?.data instanceof Uint8Array)) return;
    this.slabs.recycleSlab(result.data.buffer);
  }

  /** Encrypts one small value on the calling thread (config values, tests). */
  encryptSync(data: Uint8Array, aad?: Uint8Array): Buffer {
    this.checkAad([data], aad && [aad]);
    const out = Buffer.allocUnsafe(this.encryptedLength(data.length));
    try {
      return out.subarray(0, this.live().encryptSync(data, out, aad));
    } catch (err) {
      throw fromNative(err);
    }
  }

  decryptSync(data: Uint8Array, aad?: Uint8Array): Buffer {
    this.checkAad([data], aad && [aad]);
    const out = Buffer.allocUnsafe(Math.max(0, data.length - this.overhead));
    try {
      return out.subarray(0, this.live().decryptSync(data, out, aad));
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Gives back the memory of a batch's results for the next batch to reuse. Only for callers
   * that are completely done with every buffer of that batch (the SSTable writer, once they are
   * on disk); buffers never given back are simply garbage-collected.
   */
  recycle(batch: Buffer[]): void {
    checkBuffers(batch, 'recycle: batch');
    this.slabs.recycle(batch);
    this.decoded.recycle(batch);
  }

  /** The most bytes {@link encodeBatch} writes for a chunk of `plainLength` bytes. */
  encodedLength(codec: NativeCodecName, plainLength: number): number {
    const k = `${codec}:${plainLength}`;
    let n = this.bounds.get(k);
    if (n === undefined) {
      checkLength(plainLength, 'encodedLength: plainLength');
      try {
        n = this.live().encodedLength(codec, plainLength);
      } catch (err) {
        throw fromNative(err);
      }
      if (this.bounds.size < 64) this.bounds.set(k, n);
    }
    return n;
  }

  /**
   * Compresses with `codec` (natively: see native().codecAvailable) and encrypts each chunk in
   * one pass on the addon's threads. Same results as compressing, then {@link encryptBatch}.
   * With `sums`, the result's `sums` holds each encrypted chunk's checksum of that kind, computed
   * in the same pass.
   */
  async encodeBatch(
    codec: NativeCodecName,
    chunks: Uint8Array[],
    where: ChunkLocator = byIndex,
    aad?: Uint8Array[],
    options: { sums?: ChecksumType } = {},
  ): Promise<Buffer[] & { sums?: Uint32Array }> {
    const handle = this.live();
    this.checkBatch(chunks, aad);
    const sizes = new Uint32Array(chunks.length);
    for (let i = 0; i < chunks.length; i++) sizes[i] = this.encodedLength(codec, chunks[i].length);
    const out = this.slabs.carveSpans(sizes);
    const sums = options.sums ?? null;
    let result: Uint32Array;
    try {
      result = await handle.encodeInto(
        codec,
        asSpans(chunks),
        out,
        aad ? asSpans(aad) : null,
        sums,
      );
    } catch (err) {
      throw fromNative(err, locate(where));
    }
    const stored: Buffer[] & { sums?: Uint32Array } = viewsOf(
      out,
      result.subarray(0, chunks.length),
    );
    if (sums) stored.sums = result.subarray(chunks.length);
    return stored;
  }

  /**
   * Decrypts and decompresses each chunk in one pass; chunk i must come to `lengths[i]` bytes.
   * The results are the caller's to keep, or to give back through {@link recycle} when done.
   * With `crc`, the result's `crcs` holds each plain chunk's CRC32, computed in the same pass.
   */
  async decodeBatch(
    codec: NativeCodecName,
    chunks: Uint8Array[],
    lengths: number[],
    where: ChunkLocator = byIndex,
    aad?: Uint8Array[],
    options: { crc?: boolean } = {},
  ): Promise<Buffer[] & { crcs?: Uint32Array }> {
    const handle = this.live();
    this.checkBatch(chunks, aad);
    if (!Array.isArray(lengths) || lengths.length !== chunks.length) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        'decodeBatch: lengths must be an array with one plain length per chunk',
      );
    }
    lengths.forEach((n, i) => checkLength(n, `decodeBatch: lengths[${i}]`));
    // Without a codec, decryption writes its padding too before it is cut off.
    const sizes = Uint32Array.from(lengths);
    if (codec === 'None')
      for (let i = 0; i < sizes.length; i++)
        sizes[i] = Math.max(sizes[i], chunks[i].length - this.overhead);
    const spans = this.decoded.carveSpans(sizes);
    let result: Uint32Array;
    try {
      result = await handle.decodeInto(
        codec,
        asSpans(chunks),
        Uint32Array.from(lengths),
        spans,
        aad ? asSpans(aad) : null,
        options.crc === true,
      );
    } catch (err) {
      throw fromNative(err, locate(where));
    }
    const out: Buffer[] & { crcs?: Uint32Array } = viewsOf(spans, lengths);
    if (options.crc) out.crcs = result.subarray(chunks.length);
    return out;
  }

  /** Wipes the key from native memory. Batches already running finish first. */
  destroy(): void {
    this.handle?.destroy();
    this.handle = undefined;
    this.slabs.clear();
    this.decoded.clear();
  }

  get destroyed(): boolean {
    return this.handle === undefined;
  }
}

/**
 * Makes a chunk cipher for a transformation, strength and key. Throws a TdeError when the
 * transformation or strength is not accepted (the message lists what is) or the key has the
 * wrong length.
 */
export function createChunkCipher(options: ChunkCipherOptions): ChunkCipher {
  if (options === null || typeof options !== 'object') {
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'createChunkCipher needs an options object');
  }
  if (!(options.key instanceof Uint8Array)) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      'key must be a Buffer or Uint8Array of raw key bytes',
    );
  }
  const resolved = resolveCipher(
    options.cipher_algorithm,
    options.secret_key_strength,
    options.iv_length,
  );
  if (options.fixed_iv !== undefined && resolved.ivLength !== options.fixed_iv.length) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `${resolved.name} takes a ${resolved.ivLength}-byte IV, ` +
        `not ${options.fixed_iv.length} bytes`,
    );
  }
  // With a fixed IV nothing is stored before each chunk.
  const choice = options.fixed_iv !== undefined ? { ...resolved, ivLength: 0 } : resolved;
  const key = normalizeKey(choice, options.key);
  try {
    const handle = new (native().ChunkCipher)(
      {
        evpName: choice.evpName,
        ivLength: choice.ivLength,
        padding: choice.padding === 'PKCS5Padding',
        rc2KeyBits: choice.rc2KeyBits,
        tagLength: choice.tagLength,
        fixedIv: options.fixed_iv,
      },
      key,
    );
    return new ChunkCipher(choice, handle);
  } catch (err) {
    throw fromNative(err, () => ({
      prefix: `cannot set up ${choice.name} (${choice.strength} bits)`,
    }));
  } finally {
    // normalizeKey may have made a private copy (DESede 112); wipe it. The caller's buffer is
    // theirs.
    if (key.buffer !== options.key.buffer) key.fill(0);
  }
}

/** A chunk length: a whole number from 0 to 2^31 - 1, as the addon takes them. */
function checkLength(n: unknown, what: string): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0x7fffffff) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `${what} must be a whole number from 0 to 2147483647, not ${String(n)}`,
    );
  }
}

/** An array of Buffers or Uint8Arrays, every element checked (a hole or a null included). */
function checkBuffers(list: unknown, what: string): void {
  if (!Array.isArray(list)) {
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${what} must be an array of Buffers`);
  }
  for (let i = 0; i < list.length; i++) {
    if (!(list[i] instanceof Uint8Array)) {
      const got = list[i] === null ? 'null' : typeof list[i];
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${what}[${i}] must be a Buffer or Uint8Array, not ${got}`,
      );
    }
  }
}
