/**
 * An encrypting compressor that reports to a {@link TdeObserver}: chunks and pages encrypted and
 * decrypted, failures to decrypt or authenticate, its opening and closing. Before anything is
 * encrypted the observer may refuse the key (a revoked KMIP key). The work itself is the inner
 * compressor's, unchanged.
 */
import type { ChecksumType } from '../checksum';
import type { Compressor, DecodedChunks, EncodedChunks } from '../compression/compressor';
import type { ChunkBinding, SSTableMetadata } from '../compression/binding';
import { ChunkLocator, ErrorCodeName, isTdeError, TdeError } from '../errors';
import type { PageCodec } from '../sstable/page-file';
import type { TdeObserver } from './observer';

/** Codes that mean a chunk or page did not decrypt or authenticate. */
const INTEGRITY_CODES: ErrorCodeName[] = [
  'ERR_TDE_INTEGRITY',
  'ERR_TDE_DECRYPT_FAILED',
  'ERR_TDE_CORRUPT_CHUNK',
];

function sum(lengths: Iterable<number>): number {
  let n = 0;
  for (const l of lengths) n += l;
  return n;
}

class ObservedCompressor implements Compressor {
  /** Failures already reported, by file and chunk: a retry of the same chunk is not a new one. */
  private readonly failed = new Set<string>();
  private closed = false;

  readonly pageCodec?: (component: string, sstableId?: Buffer) => PageCodec;
  readonly sealMetadata?: (meta: SSTableMetadata) => string;
  readonly checkMetadata?: (meta: SSTableMetadata, tag: string) => boolean;

  constructor(
    private readonly inner: Compressor,
    private readonly observer: TdeObserver,
  ) {
    // Only what the inner compressor has: callers test for these methods' presence.
    const pageCodec = inner.pageCodec?.bind(inner);
    if (pageCodec) this.pageCodec = (component, id) => this.observePages(pageCodec(component, id));
    const seal = inner.sealMetadata?.bind(inner);
    if (seal) {
      this.sealMetadata = (meta) => {
        this.checkKey();
        return seal(meta);
      };
    }
    const check = inner.checkMetadata?.bind(inner);
    if (check) {
      this.checkMetadata = (meta, tag) => {
        const ok = check(meta, tag);
        if (!ok) {
          const what = 'SSTable metadata fails its authentication tag';
          const err = new TdeError('ERR_TDE_INTEGRITY', what);
          this.report(err, 'meta');
        }
        return ok;
      };
    }
    observer.compressorOpened?.(this);
  }

  get params() {
    return this.inner.params;
  }

  get className(): string {
    return this.inner.className;
  }

  get encrypting(): boolean {
    return this.inner.encrypting;
  }

  get keyId(): string | undefined {
    return this.inner.keyId;
  }

  get authenticated(): boolean {
    return this.inner.authenticated;
  }

  get warnings(): string[] {
    return this.inner.warnings;
  }

  private checkKey(): void {
    if (this.inner.keyId !== undefined) this.observer.checkEncryptionKey?.(this.inner.keyId);
  }

  private report(err: unknown, fallback: string): void {
    if (!isTdeError(err) || !INTEGRITY_CODES.includes(err.code)) return;
    const slot = `${err.file ?? ''}\0${err.chunk ?? fallback}`;
    if (this.failed.has(slot)) return;
    this.failed.add(slot);
    this.observer.integrityFailure?.({
      code: err.code,
      message: err.message,
      file: err.file,
      chunk: err.chunk,
      key: this.inner.keyId,
    });
  }

  async compressBatch(
    chunks: Buffer[],
    binding?: ChunkBinding,
    options?: { sums?: ChecksumType },
  ): Promise<EncodedChunks> {
    this.checkKey();
    const out = await this.inner.compressBatch(chunks, binding, options);
    const bytes = sum(chunks.map((c) => c.length));
    this.observer.cipherWork?.({ op: 'encrypt', unit: 'chunk', count: chunks.length, bytes });
    return out;
  }

  async uncompressBatch(
    chunks: Buffer[],
    lengths: number[],
    where: ChunkLocator,
    binding?: ChunkBinding,
    options?: { crc?: boolean },
  ): Promise<DecodedChunks> {
    let out: DecodedChunks;
    try {
      out = await this.inner.uncompressBatch(chunks, lengths, where, binding, options);
    } catch (err) {
      this.report(err, 'batch');
      throw err;
    }
    const bytes = sum(lengths);
    this.observer.cipherWork?.({ op: 'decrypt', unit: 'chunk', count: chunks.length, bytes });
    return out;
  }

  private observePages(codec: PageCodec): PageCodec {
    return {
      plainPerPage: codec.plainPerPage,
      encrypt: async (plain, first, last) => {
        this.checkKey();
        const out = await codec.encrypt(plain, first, last);
        const bytes = sum(plain.map((p) => p.length));
        this.observer.cipherWork?.({ op: 'encrypt', unit: 'page', count: plain.length, bytes });
        return out;
      },
      decrypt: async (ct, first, last, where) => {
        let out: Buffer[];
        try {
          out = await codec.decrypt(ct, first, last, where);
        } catch (err) {
          this.report(err, 'pages');
          throw err;
        }
        const bytes = sum(out.map((p) => p.length));
        this.observer.cipherWork?.({ op: 'decrypt', unit: 'page', count: out.length, bytes });
        return out;
      },
    };
  }

  recycle(stored: Buffer[]): void {
    this.inner.recycle(stored);
  }

  compressionInfoOptions(): Record<string, string> {
    return this.inner.compressionInfoOptions();
  }

  close(): void {
    this.inner.close();
    if (this.closed) return;
    this.closed = true;
    this.observer.compressorClosed?.(this);
  }
}

/**
 * Wraps an encrypting compressor so that it reports to `observer`. Plain compressors are
 * returned as they are: they encrypt nothing.
 */
export function observeCompressor(inner: Compressor, observer: TdeObserver): Compressor {
  return inner.encrypting ? new ObservedCompressor(inner, observer) : inner;
}
