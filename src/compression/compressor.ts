/**
 * The compressor classes a table can name: LZ4Compressor, DeflateCompressor and SnappyCompressor
 * (what Cassandra writes), Encryptor (encrypt only), and EncryptingLZ4Compressor,
 * EncryptingDeflateCompressor and EncryptingSnappyCompressor (compress, then encrypt).
 *
 * All share one interface: batches of chunks in, batches out. SSTable code sees only this
 * interface, never a key.
 */
import { ChunkCipher, createChunkCipher } from '../cipher/chunk-cipher';
import { resolveCipher } from '../cipher/transformation';
import type { ChecksumType } from '../checksum';
import { ChunkLocator, isTdeError, TdeError } from '../errors';
import { KeyProvider, ResolvedKey } from '../keys/provider';
import { observeCompressor } from '../metrics/observed-compressor';
import { PageCodec, plainCapacity } from '../sstable/page-file';
import { ChunkBinding, chunkAad, metadataAad, pageAad, SSTableMetadata } from './binding';
import { checkPlausible, Codec, codecFor, EncodedChunks } from './codecs';
import {
  COMPRESSOR_CLASSES,
  CompressionParams,
  compressionInfoOptions,
  describeParams,
  parseTableCompression,
} from './options';

/** Plain chunks, with each one's CRC32 when asked for and computed on the way. */
export type DecodedChunks = Buffer[] & { crcs?: Uint32Array };
export type { EncodedChunks };

export interface Compressor {
  readonly params: CompressionParams;
  /** Simple class name as written in CompressionInfo.db. */
  readonly className: string;
  readonly encrypting: boolean;
  /** Name of the key in use (key file or KMIP id), for messages; undefined when not encrypting. */
  readonly keyId?: string;
  /**
   * True when chunks are authenticated (GCM): then every batch needs a {@link ChunkBinding}
   * that says which SSTable and position its chunks belong to.
   */
  readonly authenticated: boolean;
  /** Things worth telling the operator about this choice (for example, ECB's weakness). */
  readonly warnings: string[];
  /**
   * Compresses (and encrypts) chunks. Output i corresponds to input i. With `{ sums: kind }` the
   * result's `sums` may hold each stored chunk's checksum of that kind, computed in the same pass
   * (the addon's codecs do; callers compute what is missing).
   */
  compressBatch(
    chunks: Buffer[],
    binding?: ChunkBinding,
    options?: { sums?: ChecksumType },
  ): Promise<EncodedChunks>;
  /** Decrypts (and decompresses) chunks; each must yield exactly `lengths[i]` bytes. */
  /**
   * With `{ crc: true }` the result's `crcs` may hold each plain chunk's CRC32, computed in the
   * same pass (the addon's codecs do; callers compute what is missing).
   */
  uncompressBatch(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    binding?: ChunkBinding,
    options?: { crc?: boolean },
  ): Promise<DecodedChunks>;
  /**
   * Gives back the memory of a compressBatch or uncompressBatch result once the caller is done
   * with every buffer of it (compressed chunks written to disk, plain chunks consumed), so the
   * next batch reuses it instead of fresh pages. Optional to call; never call it for a batch
   * still in use.
   */
  recycle(batch: Buffer[]): void;
  /** Options to record in CompressionInfo.db: class options, never key bytes. */
  compressionInfoOptions(): Record<string, string>;
  /**
   * Encrypting compressors: the codec for an index or metadata component's pages. `sstableId`
   * is required for authenticated (GCM) compressors, which bind each page to it.
   */
  pageCodec?(component: string, sstableId?: Buffer): PageCodec;
  /** Authenticated compressors: a tag (hex) binding an SSTable's metadata to the key. */
  sealMetadata?(meta: SSTableMetadata): string;
  /** Authenticated compressors: whether `tag` is the one sealMetadata gave for `meta`. */
  checkMetadata?(meta: SSTableMetadata, tag: string): boolean;
  /** Wipes the key, if any. */
  close(): void;
}

class PlainCompressor implements Compressor {
  readonly encrypting = false;
  readonly authenticated = false;
  readonly warnings: string[] = [];

  constructor(
    readonly params: CompressionParams,
    private readonly codec: Codec,
  ) {}

  get className(): string {
    return this.params.className as string;
  }

  compressBatch(
    chunks: Buffer[],
    _binding?: ChunkBinding,
    options?: { sums?: ChecksumType },
  ): Promise<EncodedChunks> {
    return this.codec.compress(chunks, options);
  }

  uncompressBatch(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    _binding?: ChunkBinding,
    options?: { crc?: boolean },
  ): Promise<DecodedChunks> {
    return this.codec.uncompress(chunks, lengths, where, options);
  }

  recycle(stored: Buffer[]): void {
    this.codec.recycle?.(stored);
  }

  compressionInfoOptions(): Record<string, string> {
    return compressionInfoOptions(this.params);
  }

  close(): void {}
}

class EncryptingCompressor implements Compressor {
  readonly encrypting = true;
  readonly warnings: string[] = [];

  constructor(
    readonly params: CompressionParams,
    private readonly codec: Codec,
    private readonly cipher: ChunkCipher,
    readonly keyId: string,
    private readonly keyCheck: string,
    /** True when the key was checked against a recorded key check value. */
    private readonly keyVerified: boolean,
    /** What the key provider asks to record so reads find this key (a KMIP id). */
    private readonly keyRecord: Record<string, string>,
  ) {
    if (cipher.choice.mode === 'ECB') {
      this.warnings.push(
        `${cipher.choice.name} encrypts equal 16-byte blocks to equal ciphertext, so ` +
          'patterns in the data show through; prefer AES/CBC/PKCS5Padding, or AES/GCM/NoPadding, ' +
          'which also detects altered chunks',
      );
    }
  }

  get authenticated(): boolean {
    return this.cipher.aead;
  }

  private aad(count: number, binding: ChunkBinding | undefined): Buffer[] | undefined {
    if (!this.cipher.aead) return undefined;
    if (!binding) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${this.cipher.choice.name} chunks are bound to ` +
          'their SSTable and position: pass a ChunkBinding',
      );
    }
    return chunkAad(binding, count, this.keyCheck);
  }

  get className(): string {
    return this.params.className as string;
  }

  /** Whether compression and encryption run as one native pass (the addon has the codec). */
  private get onePass(): boolean {
    return this.codec.native || this.codec.name === 'None';
  }

  async compressBatch(
    chunks: Buffer[],
    binding?: ChunkBinding,
    options?: { sums?: ChecksumType },
  ): Promise<EncodedChunks> {
    const aad = this.aad(chunks.length, binding);
    if (this.onePass)
      return this.cipher.encodeBatch(this.codec.name, chunks, undefined, aad, options);
    const compressed = await this.codec.compress(chunks);
    return this.cipher.encryptBatch(compressed, undefined, aad);
  }

  async uncompressBatch(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    binding?: ChunkBinding,
    options?: { crc?: boolean },
  ): Promise<DecodedChunks> {
    const aad = this.aad(chunks.length, binding);
    try {
      if (this.onePass) {
        checkPlausible(
          this.codec.name,
          chunks,
          lengths,
          where,
          this.cipher.ivLength + this.cipher.choice.tagLength,
        );
        return await this.cipher.decodeBatch(this.codec.name, chunks, lengths, where, aad, options);
      }
      const plain = await this.cipher.decryptBatch(chunks, where, aad);
      const out = await this.codec.uncompress(plain, lengths, where);
      // The decrypted, still compressed, chunks are done with once decoded.
      this.cipher.recycle(plain);
      return out;
    } catch (err) {
      // With a recorded key check value that matched, the key is right: the chunk is damaged.
      if (this.keyVerified && isTdeError(err, 'ERR_TDE_DECRYPT_FAILED')) {
        throw new TdeError(
          'ERR_TDE_CORRUPT_CHUNK',
          `${err.message} (the key is the one it was ` +
            'written with, so the chunk itself is damaged)',
          err.context,
          err,
        );
      }
      throw err;
    }
  }

  recycle(stored: Buffer[]): void {
    this.cipher.recycle(stored);
  }

  pageCodec(component: string, sstableId?: Buffer): PageCodec {
    const cipher = this.cipher;
    if (cipher.aead && !sstableId) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        'authenticated pages need the SSTable id they are bound to',
      );
    }
    const aad = (first: number, count: number, last: number) =>
      cipher.aead
        ? pageAad(component, sstableId as Buffer, first, count, last, this.keyCheck)
        : undefined;
    return {
      plainPerPage: plainCapacity((n) => cipher.encryptedLength(n)),
      encrypt: (plain, first, last) =>
        cipher.encryptBatch(plain, undefined, aad(first, plain.length, last)),
      decrypt: async (ct, first, last, where) => {
        try {
          return await cipher.decryptBatch(ct, where, aad(first, ct.length, last));
        } catch (err) {
          if (this.keyVerified && isTdeError(err, 'ERR_TDE_DECRYPT_FAILED')) {
            throw new TdeError(
              'ERR_TDE_CORRUPT_CHUNK',
              `${err.message} (the key is the one it was written ` +
                'with, so the page itself is damaged)',
              err.context,
              err,
            );
          }
          throw err;
        }
      },
    };
  }

  // The tag is a GCM encryption of nothing, with the metadata as additional data: the nonce and
  // tag, 28 bytes, in hex.
  sealMetadata(meta: SSTableMetadata): string {
    return this.cipher
      .encryptSync(
        Buffer.alloc(0),
        Buffer.concat([metadataAad(meta), Buffer.from(this.keyCheck, 'hex')]),
      )
      .toString('hex');
  }

  checkMetadata(meta: SSTableMetadata, tag: string): boolean {
    if (!/^[0-9a-f]+$/.test(tag)) return false;
    try {
      this.cipher.decryptSync(
        Buffer.from(tag, 'hex'),
        Buffer.concat([metadataAad(meta), Buffer.from(this.keyCheck, 'hex')]),
      );
      return true;
    } catch {
      return false;
    }
  }

  compressionInfoOptions(): Record<string, string> {
    return compressionInfoOptions(this.params, this.keyCheck, this.keyRecord);
  }

  close(): void {
    this.cipher.destroy();
  }
}

export interface CreateCompressorOptions {
  /** Where keys come from; required for the encrypting classes. */
  keys?: KeyProvider;
  /** File the params came from, named in a wrong-key error. */
  file?: string;
}

/**
 * Makes the compressor for a table's (or an SSTable's) compression params. For the encrypting
 * classes it fetches the key; when the params carry a key check value (params read back from
 * CompressionInfo.db) and the key does not match it, it fails with ERR_TDE_WRONG_KEY.
 */
export async function createCompressor(
  params: CompressionParams,
  options: CreateCompressorOptions = {},
): Promise<Compressor> {
  if (!params.enabled || !params.className) {
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', 'an uncompressed table has no compressor');
  }
  const info = COMPRESSOR_CLASSES[params.className];
  const codec = codecFor(info.codec);
  if (!info.encrypting) return new PlainCompressor(params, codec);

  const e = params.encryption;
  if (!e)
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${params.className} needs encryption settings`);
  if (!options.keys) {
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `${params.className} needs a key provider`);
  }
  const choice = resolveCipher(e.cipherAlgorithm, e.strength, e.ivLength);
  let key: ResolvedKey;
  try {
    key = await options.keys.keyFor(e, choice);
  } catch (err) {
    // A key that cannot be had is reported with the SSTable that needs it.
    if (isTdeError(err) && options.file && err.file === undefined) {
      throw new TdeError(
        err.code,
        `${options.file} needs a key that cannot be had: ${err.message}`,
        { ...err.context, file: options.file },
        err,
      );
    }
    throw err;
  }
  try {
    if (e.keyCheckValue !== undefined && e.keyCheckValue !== key.keyCheckValue) {
      const where = options.file ? `${options.file} was` : 'the data was';
      const remedy = key.id.startsWith('kmip://')
        ? `the KMIP server now returns different key material for ${key.id}; find out how the ` +
          `key was replaced`
        : `restore the key file ${key.id} that was in use when it was written`;
      throw new TdeError(
        'ERR_TDE_WRONG_KEY',
        `${where} encrypted with a different key than ${key.id} now holds (key check value ` +
          `${e.keyCheckValue} recorded, ${key.keyCheckValue} found): ${remedy}`,
        { file: options.file, key: key.id },
      );
    }
    const cipher = createChunkCipher({
      cipher_algorithm: choice.name,
      secret_key_strength: choice.strength,
      key: key.bytes,
      iv_length: e.ivLength,
    });
    const made = new EncryptingCompressor(
      params,
      codec,
      cipher,
      key.id,
      key.keyCheckValue,
      e.keyCheckValue !== undefined,
      key.record ?? {},
    );
    // Counting and key-state checks, when the key provider carries an observer (openPlugin).
    const observer = options.keys.observer;
    return observer ? observeCompressor(made, observer) : made;
  } finally {
    key.bytes.fill(0);
  }
}

/**
 * Convenience for a storage process: makes a compressor straight from a table's CQL
 * compression map, for example `{ class: 'EncryptingLZ4Compressor', cipher_algorithm:
 * 'AES/CBC/PKCS5Padding', secret_key_strength: 128, chunk_length_kb: 64 }`.
 */
export async function compressorForTable(
  map: Record<string, unknown>,
  options: CreateCompressorOptions & { defaultChunkLength?: number } = {},
): Promise<Compressor> {
  const params = parseTableCompression(map, options.defaultChunkLength ?? 65536);
  return createCompressor(params, options);
}

export { describeParams };
