/**
 * Every error this package raises is a {@link TdeError} with a stable `code`. The codes the native
 * addon can raise are listed in native/errors.h as well; a test keeps the two lists equal.
 *
 * Messages name the file, chunk, key or option involved and say what the user can do about it.
 * They never contain key bytes.
 */

export const ErrorCode = {
  // Shared with native/errors.h.
  ERR_TDE_INVALID_ARGUMENT: 'ERR_TDE_INVALID_ARGUMENT',
  ERR_TDE_CIPHER_UNAVAILABLE: 'ERR_TDE_CIPHER_UNAVAILABLE',
  ERR_TDE_KEY_LENGTH: 'ERR_TDE_KEY_LENGTH',
  ERR_TDE_CIPHER_DESTROYED: 'ERR_TDE_CIPHER_DESTROYED',
  ERR_TDE_CHUNK_LENGTH: 'ERR_TDE_CHUNK_LENGTH',
  ERR_TDE_DECRYPT_FAILED: 'ERR_TDE_DECRYPT_FAILED',
  /** An authenticated (GCM) chunk failed its tag: altered, moved, swapped, or another key. */
  ERR_TDE_INTEGRITY: 'ERR_TDE_INTEGRITY',
  ERR_TDE_CRYPTO_INTERNAL: 'ERR_TDE_CRYPTO_INTERNAL',
  /** A file could not be read or written, or ended before the bytes asked for. */
  ERR_TDE_IO: 'ERR_TDE_IO',

  // Raised by TypeScript only.
  /** A cipher transformation or key strength that no supported cipher matches. */
  ERR_TDE_UNKNOWN_CIPHER: 'ERR_TDE_UNKNOWN_CIPHER',
  ERR_TDE_KEY_STRENGTH: 'ERR_TDE_KEY_STRENGTH',
  /** A table compression option that is unknown, misspelt or out of range. */
  ERR_TDE_BAD_OPTION: 'ERR_TDE_BAD_OPTION',
  ERR_TDE_UNKNOWN_COMPRESSOR: 'ERR_TDE_UNKNOWN_COMPRESSOR',
  /** A known gap: something DSE or Cassandra has that this package does not do (yet). */
  ERR_TDE_UNSUPPORTED: 'ERR_TDE_UNSUPPORTED',
  ERR_TDE_KEY_FILE: 'ERR_TDE_KEY_FILE',
  ERR_TDE_KEY_NOT_FOUND: 'ERR_TDE_KEY_NOT_FOUND',
  ERR_TDE_WRONG_KEY: 'ERR_TDE_WRONG_KEY',
  ERR_TDE_KEY_EXISTS: 'ERR_TDE_KEY_EXISTS',
  /** A key still protects data (or is still active) and so is not destroyed. */
  ERR_TDE_KEY_IN_USE: 'ERR_TDE_KEY_IN_USE',
  ERR_TDE_CONFIG: 'ERR_TDE_CONFIG',
  ERR_TDE_SCHEMA: 'ERR_TDE_SCHEMA',
  ERR_TDE_CORRUPT_COMPRESSION_INFO: 'ERR_TDE_CORRUPT_COMPRESSION_INFO',
  ERR_TDE_CORRUPT_CRC: 'ERR_TDE_CORRUPT_CRC',
  ERR_TDE_CHUNK_CHECKSUM: 'ERR_TDE_CHUNK_CHECKSUM',
  ERR_TDE_CORRUPT_CHUNK: 'ERR_TDE_CORRUPT_CHUNK',
  ERR_TDE_DIGEST_MISMATCH: 'ERR_TDE_DIGEST_MISMATCH',
  ERR_TDE_MISSING_COMPONENT: 'ERR_TDE_MISSING_COMPONENT',
  ERR_TDE_CORRUPT_TOC: 'ERR_TDE_CORRUPT_TOC',
  ERR_TDE_BAD_SSTABLE_NAME: 'ERR_TDE_BAD_SSTABLE_NAME',
  ERR_TDE_READ_RANGE: 'ERR_TDE_READ_RANGE',
  ERR_TDE_LOCKED: 'ERR_TDE_LOCKED',
  ERR_TDE_REWRITE_FAILED: 'ERR_TDE_REWRITE_FAILED',
  /** An SSTable cannot be read at start-up and disk_failure_policy says stop. */
  ERR_TDE_UNREADABLE_SSTABLE: 'ERR_TDE_UNREADABLE_SSTABLE',
  /** The operator interrupted a run (SIGINT, SIGTERM); what was in progress was undone. */
  ERR_TDE_CANCELLED: 'ERR_TDE_CANCELLED',
  ERR_TDE_DATA_DIR: 'ERR_TDE_DATA_DIR',
  /**
   * A write failed for want of space: the file system is full (ENOSPC), a disk quota is used up
   * (EDQUOT), or the file reached the process's file-size limit (EFBIG, `ulimit -f`).
   */
  ERR_TDE_DISK_FULL: 'ERR_TDE_DISK_FULL',
  /** A malformed KMIP TTLV message (from a server, or given to the codec). */
  ERR_TDE_TTLV: 'ERR_TDE_TTLV',
  /** A commit log segment's header is unreadable (not a segment, unsupported version, damaged). */
  ERR_TDE_SEGMENT_HEADER: 'ERR_TDE_SEGMENT_HEADER',
  /** A commit log segment has a damaged section; what came before it was read. */
  ERR_TDE_SEGMENT_DAMAGED: 'ERR_TDE_SEGMENT_DAMAGED',
  /**
   * A commit log segment ends inside a section (a crash while writing); what came before was read.
   */
  ERR_TDE_SEGMENT_TRUNCATED: 'ERR_TDE_SEGMENT_TRUNCATED',
  /** A key store's password is wrong (or the store was altered). */
  ERR_TDE_KEYSTORE_PASSWORD: 'ERR_TDE_KEYSTORE_PASSWORD',
  /** A KMIP server answered an operation with a failure (its reason and message are quoted). */
  ERR_TDE_KMIP_OPERATION: 'ERR_TDE_KMIP_OPERATION',
  /** No KMIP host of a group could be reached or used; the message lists each host's cause. */
  ERR_TDE_KMIP_UNAVAILABLE: 'ERR_TDE_KMIP_UNAVAILABLE',
  /**
   * A KMIP key was revoked, destroyed or compromised while in use, and the plugin's key-state
   * poll stopped it from encrypting; data it encrypted still decrypts while its bytes are cached.
   */
  ERR_TDE_KEY_REVOKED: 'ERR_TDE_KEY_REVOKED',
  /** The plugin was closed; open a new one (openPlugin) to carry on. */
  ERR_TDE_CLOSED: 'ERR_TDE_CLOSED',
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;

/** The codes native/errors.h declares; the addon reports only these. */
export const NATIVE_ERROR_CODES: readonly ErrorCodeName[] = [
  'ERR_TDE_INVALID_ARGUMENT',
  'ERR_TDE_CIPHER_UNAVAILABLE',
  'ERR_TDE_KEY_LENGTH',
  'ERR_TDE_CIPHER_DESTROYED',
  'ERR_TDE_CHUNK_LENGTH',
  'ERR_TDE_DECRYPT_FAILED',
  'ERR_TDE_INTEGRITY',
  'ERR_TDE_CORRUPT_CHUNK',
  'ERR_TDE_CRYPTO_INTERNAL',
  'ERR_TDE_IO',
];

/** Where an error happened, when it concerns a file. All fields are optional. */
export interface ErrorContext {
  /** Path of the file concerned. */
  file?: string;
  /** Chunk index within Data.db (or slice index within CRC.db). */
  chunk?: number;
  /** Byte offset within the file. */
  offset?: number;
  /** Length in bytes of the region concerned. */
  length?: number;
  /** Name or id of the key concerned (never its bytes). */
  key?: string;
}

/** Says where item `index` of a batch lives (file, chunk, offset), for error messages. */
export type ChunkLocator = (index: number) => { prefix: string; context: ErrorContext };

export class TdeError extends Error implements ErrorContext {
  readonly code: ErrorCodeName;
  // `declare`: no own property unless set, so errors print and compare without empty fields.
  declare file?: string;
  declare chunk?: number;
  declare offset?: number;
  declare length?: number;
  declare key?: string;

  constructor(code: ErrorCodeName, message: string, context: ErrorContext = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TdeError';
    this.code = code;
    for (const k of CONTEXT_FIELDS) {
      if (context[k] !== undefined) (this as ErrorContext)[k] = context[k] as never;
    }
  }

  /** The location fields of this error, to carry over into a derived one. */
  get context(): ErrorContext {
    const out: ErrorContext = {};
    for (const k of CONTEXT_FIELDS) if (this[k] !== undefined) out[k] = this[k] as never;
    return out;
  }
}

const CONTEXT_FIELDS = ['file', 'chunk', 'offset', 'length', 'key'] as const;

export function isTdeError(err: unknown, code?: ErrorCodeName): err is TdeError {
  return err instanceof TdeError && (code === undefined || err.code === code);
}

/** An error thrown by the addon: a plain Error with `code` and, for batches, `index`. */
export interface NativeError extends Error {
  code: ErrorCodeName;
  index?: number;
}

function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as NativeError).code === 'string';
}

/**
 * Re-raises an addon error as a TdeError with this call site's stack. `describe` receives the
 * index of the failing buffer within its batch (if any) and returns the context to attach and a
 * prefix that says where the failure was.
 */
export function fromNative(
  err: unknown,
  describe?: (index: number | undefined) => { prefix: string; context?: ErrorContext },
): TdeError {
  if (err instanceof TdeError) return err;
  if (!isNativeError(err)) {
    return new TdeError('ERR_TDE_CRYPTO_INTERNAL', String(err));
  }
  const where = describe?.(err.index);
  const message = where ? `${where.prefix}: ${err.message}` : err.message;
  return new TdeError(err.code, message, where?.context ?? {}, err);
}

/** Turns a Node.js system error (ENOENT, EACCES, ENOSPC, ...) into a TdeError naming the file. */
export function fromSystem(err: unknown, file: string, doing: string): TdeError {
  if (err instanceof TdeError) return err;
  const e = err as NodeJS.ErrnoException;
  const advice: Record<string, string> = {
    ENOENT: 'the file does not exist',
    EACCES: 'permission denied: check the owner and mode of the file and its directory',
    EPERM:
      'operation not permitted: check the owner and mode of the file and its directory, and ' +
      'that it is not immutable (lsattr)',
    ENOSPC: 'the disk is full: free space and run the command again',
    EDQUOT: 'the disk quota is exhausted: free space and run the command again',
    EROFS: 'the file system is read-only',
    EISDIR: 'a directory was found where a file was expected',
    ENOTDIR: 'a file was found where a directory was expected',
    EEXIST: 'the file already exists',
    EFBIG: 'the file is larger than this process may write (check ulimit -f)',
  };
  const what = (e && e.code && advice[e.code]) || (e && e.message) || String(err);
  const full = e && (e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EFBIG');
  return new TdeError(
    full ? 'ERR_TDE_DISK_FULL' : 'ERR_TDE_IO',
    `cannot ${doing} ${file}: ${what}`,
    { file },
    err,
  );
}
