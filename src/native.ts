/**
 * The addon's one door: nothing else in the package loads the .node file. The interfaces below
 * are the whole native surface; native/addon.cc implements them.
 *
 * The addon trusts what it is given (TypeScript validates options first) and checks only what
 * OpenSSL alone can know, such as whether a cipher exists or a key length is accepted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { TdeError } from './errors';

/** What the addon needs to know about a cipher; decided by src/cipher/transformation.ts. */
export interface NativeCipherSpec {
  /** OpenSSL cipher name, for example `AES-128-CBC` or `BF-ECB`. */
  evpName: string;
  /** Bytes of IV written before each chunk's ciphertext; 0 for ECB. */
  ivLength: number;
  /** PKCS5 padding on (JCE `PKCS5Padding`) or off (`NoPadding`). */
  padding: boolean;
  /** RC2 effective key bits; 0 for every other cipher. */
  rc2KeyBits: number;
  /** AEAD (GCM) tag bytes after the ciphertext; 0 for every other mode. */
  tagLength: number;
  /** One IV for every chunk, not stored with them (commit log and hints); ivLength is then 0. */
  fixedIv?: Uint8Array;
}

export interface NativeChunkCipher {
  /**
   * Encrypts `inputs[i]` into `outputs[i]` for every i, on the addon's thread pool. Each output
   * must hold at least `encryptedLength(inputs[i].length)` bytes. Resolves to the number of bytes
   * written per chunk. Rejects with `index` set to the first failing chunk. `aads` (AEAD
   * ciphers only, and then required) is each chunk's additional authenticated data. The arrays
   * are held, not copied: leave them (and their buffers) unchanged until the promise settles.
   */
  encryptInto(
    inputs: NativeChunks,
    outputs: NativeChunks,
    aads?: NativeChunks,
  ): Promise<Uint32Array>;
  /** As encryptInto, but each output must hold `inputs[i].length - ivLength - tagLength` bytes. */
  decryptInto(
    inputs: NativeChunks,
    outputs: NativeChunks,
    aads?: NativeChunks,
  ): Promise<Uint32Array>;
  /** One chunk on the calling thread; returns bytes written. */
  encryptSync(input: Uint8Array, output: Uint8Array, aad?: Uint8Array): number;
  decryptSync(input: Uint8Array, output: Uint8Array, aad?: Uint8Array): number;
  /** Largest encrypted size (IV included) of `plainLength` bytes. */
  encryptedLength(plainLength: number): number;
  /** Wipes the key (at once, or when the last running batch ends). Further calls fail. */
  destroy(): void;
  /** codecEncodeInto, then encryption of each chunk in place, in one pass per chunk. */
  encodeInto(
    codec: NativeCodecName,
    inputs: NativeChunks,
    outputs: NativeChunks,
    aads: NativeChunks | null,
    sums: SumKind | null,
  ): Promise<Uint32Array>;
  /** Decryption, then codecDecodeInto, in one pass per chunk. */
  decodeInto(
    codec: NativeCodecName,
    inputs: NativeChunks,
    plainLengths: Uint32Array | number[],
    outputs: NativeChunks,
    aads: NativeChunks | null,
    crc: boolean,
  ): Promise<Uint32Array>;
  /** The most bytes encodeInto writes for a chunk of `plainLength` bytes. */
  encodedLength(codec: NativeCodecName, plainLength: number): number;
}

/**
 * A batch's chunks: an array of buffers, or one buffer with where each chunk lies in it (one
 * hand-over instead of one per chunk; see util/slabs.ts asSpans).
 */
export type NativeChunks =
  Uint8Array[] | { data: Uint8Array; offsets: Float64Array; lengths: Uint32Array };

/** The codecs the addon can run: Cassandra's chunk framings (native/codec.h). */
export type NativeCodecName = 'None' | 'LZ4' | 'Deflate' | 'Snappy';
type SumKind = 'crc32' | 'adler32';

export interface NativeBinding {
  /** Whether the codec runs in the addon here (LZ4 and Snappy need their system library). */
  codecAvailable(codec: string): boolean;
  /** The most bytes a compressed chunk of `plainLength` bytes can take, framing included. */
  codecBound(codec: NativeCodecName, plainLength: number): number;
  /**
   * Compresses each input into its output on the thread pool. Resolves to bytes written per
   * chunk, then each output's checksum when `sums` names a kind. The arrays and buffers must
   * stay unchanged until it settles.
   */
  codecEncodeInto(
    codec: NativeCodecName,
    inputs: NativeChunks,
    outputs: NativeChunks,
    sums: SumKind | null,
  ): Promise<Uint32Array>;
  /**
   * Decompresses each input into its output, which must come to exactly `plainLengths[i]`
   * bytes (ERR_TDE_CORRUPT_CHUNK with `index` otherwise). With `crc`, the result holds each
   * plain chunk's CRC32 after the written lengths.
   */
  codecDecodeInto(
    codec: NativeCodecName,
    inputs: NativeChunks,
    plainLengths: Uint32Array | number[],
    outputs: NativeChunks,
    crc: boolean,
  ): Promise<Uint32Array>;
  ChunkCipher: new (spec: NativeCipherSpec, key: Uint8Array) => NativeChunkCipher;
  /** Adler-32 of `data`, continuing from `initial` (1 to start). */
  adler32(data: Uint8Array, initial?: number): number;
  /** The checksum of A followed by B, given the checksums of each and B's length. */
  checksumCombine(kind: 'crc32' | 'adler32', a: number, b: number, lengthOfB: number): number;
  /**
   * Checksums of many buffers on the thread pool: each buffer's, then (last element) that of all
   * of them end to end, continuing from `initial`; with `framed`, each buffer followed by its
   * checksum as 4 big-endian bytes (Data.db's chunk framing). The buffers must stay unchanged
   * until it settles.
   */
  checksumBatch(
    kind: 'crc32' | 'adler32',
    buffers: NativeChunks,
    initial: number,
    framed?: boolean,
  ): Promise<Uint32Array>;
  /**
   * Reads `length` bytes of the open file `fd` at `position` into `into` and checksums the spans
   * of the region given by `offsets` and `lengths` (ascending, not overlapping), on the thread
   * pool: each thread reads a piece and checksums it at once. Resolves to each span's checksum,
   * then (last element) the whole region's. Rejects with ERR_TDE_IO, `index` the file offset
   * where reading failed and `errno` the system error (0: the file ended first). `fd` must stay
   * open and `into` unused until it settles.
   */
  readChecked(
    fd: number,
    position: number,
    length: number,
    into: Uint8Array,
    offsets: Float64Array,
    lengths: Uint32Array,
    kind: 'crc32' | 'adler32',
  ): Promise<Uint32Array>;
  /** Whether OpenSSL, in the addon's private library context, can provide this cipher. */
  cipherAvailable(evpName: string): boolean;
  /**
   * Starts writing a range of an open file to disk and does not wait for it (Linux
   * sync_file_range), so that the disk works while later data is prepared and the final fsync
   * has little left to do. Advisory: resolves false where it is not available or the file
   * cannot take it; never a substitute for fsync. Throws ERR_TDE_INVALID_ARGUMENT unless all
   * three are whole numbers, 0 or more (fd below 2^31, the others up to 2^53).
   */
  startWriteback(fd: number, offset: number, length: number): Promise<boolean>;
  /** How many threads a batch may use (default: the number of cores). */
  parallelism(): number;
  setParallelism(threads: number): void;
  /**
   * Whether AES runs in the addon's AES-NI code (native/aes_ni.h, gcm_ni.h): AES-CBC batches
   * encrypt up to eight chunks at once per thread, and CBC decryption, CTR, ECB and (with VAES)
   * GCM skip OpenSSL's EVP cost per chunk. False where the processor lacks AES-NI. On by default;
   * SSTABLE_TDE_MULTIBUFFER=0 turns it off, and ciphers made while it is off keep to EVP.
   * Output is the same either way.
   */
  multiBuffer(): boolean;
  /** Turns the AES-NI code on or off (benchmarks, tests); returns multiBuffer(). */
  setMultiBuffer(on: boolean): boolean;
  /** The error codes native/errors.h declares. */
  errorCodes(): string[];
  /**
   * Benchmarks' OpenSSL baseline: seconds `threads` threads (default 1) take to encrypt
   * `chunkBytes * rounds` bytes each as one continuous stream through the same EVP cipher (no
   * per-chunk IV or re-init), all at once.
   */
  evpStreamSeconds(
    spec: NativeCipherSpec,
    key: Uint8Array,
    chunkBytes: number,
    rounds: number,
    threads?: number,
  ): number;
}

let binding: NativeBinding | undefined;

/** Loads the addon on first use. Safe in worker threads: each gets its own instance. */
export function native(): NativeBinding {
  if (binding) return binding;

  // src/ and dist/ both sit one level below the package root, beside build/.
  const root = path.join(__dirname, '..');
  const candidates = ['Release', 'Debug'].map((d) =>
    path.join(root, 'build', d, 'sstable_tde.node'),
  );
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      `the native addon is not built (looked for ${candidates.join(' and ')}): run "npm install" ` +
        'or "npm run build" in the package directory; building needs python3, make and a C++ ' +
        'compiler',
    );
  }
  binding = require(file) as NativeBinding;
  return binding;
}
