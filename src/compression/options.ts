/**
 * A table's compression options, as CQL `WITH compression = {...}` and CompressionInfo.db give
 * them, parsed into one validated shape. Option names follow Cassandra and the DSE documentation,
 * including the older spellings (`sstable_compression`, `chunk_length_kb`).
 */
import { resolveCipher } from '../cipher/transformation';
import { TdeError } from '../errors';
import { quote } from '../util/redact';
import { didYouMean } from '../util/suggest';
import { CodecName } from './codecs';

export const COMPRESSOR_CLASSES = {
  LZ4Compressor: { codec: 'LZ4', encrypting: false },
  DeflateCompressor: { codec: 'Deflate', encrypting: false },
  SnappyCompressor: { codec: 'Snappy', encrypting: false },
  Encryptor: { codec: 'None', encrypting: true },
  EncryptingLZ4Compressor: { codec: 'LZ4', encrypting: true },
  EncryptingDeflateCompressor: { codec: 'Deflate', encrypting: true },
  EncryptingSnappyCompressor: { codec: 'Snappy', encrypting: true },
} as const satisfies Record<string, { codec: CodecName; encrypting: boolean }>;

export type CompressorClass = keyof typeof COMPRESSOR_CLASSES;

/** Classes Cassandra has that this package knows of but cannot yet read or write. */
const KNOWN_UNSUPPORTED = ['ZstdCompressor', 'NoopCompressor'];

export const LOCAL_PROVIDER = 'LocalFileSystemKeyProviderFactory';
export const KMIP_PROVIDER = 'KmipKeyProviderFactory';
const KEY_PROVIDERS = [LOCAL_PROVIDER, KMIP_PROVIDER, 'ReplicatedKeyProviderFactory'];

/** DSE's defaults for the encryption options. */
export const DEFAULT_CIPHER = 'AES/CBC/PKCS5Padding';
export const DEFAULT_STRENGTH = 128;
export const DEFAULT_SYSTEM_KEY_FILE = 'system_key';

/** Which key encrypts a table, and how. Never holds key bytes. */
export interface EncryptionSettings {
  /** Canonical JCE transformation. */
  cipherAlgorithm: string;
  strength: number;
  /** `iv_length` as given, when given. */
  ivLength?: number;
  keyProvider: typeof LOCAL_PROVIDER | typeof KMIP_PROVIDER;
  /** Local provider: the key file's name inside system_key_directory. */
  systemKeyFile?: string;
  kmipHost?: string;
  keyNamespace?: string;
  /**
   * Fingerprint of the key a file was written with (see keys/key-check.ts); present only in
   * options read from CompressionInfo.db.
   */
  keyCheckValue?: string;
  /**
   * The KMIP key an SSTable was written with; present only in options read from CompressionInfo.db.
   */
  kmipKeyId?: string;
}

export interface CompressionParams {
  /** False for a table written without compression (Data.db plus CRC.db). */
  enabled: boolean;
  className?: CompressorClass;
  /** Uncompressed bytes per chunk; a power of two. */
  chunkLength: number;
  /**
   * na and later: a chunk whose compressed form is at least this long is stored uncompressed.
   * Undefined means never (Cassandra writes Integer.MAX_VALUE).
   */
  maxCompressedLength?: number;
  encryption?: EncryptionSettings;
  /** Codec options passed through unchanged (lz4_compressor_type, ...). */
  codecOptions: Record<string, string>;
}

const GENERIC = [
  'class',
  'sstable_compression',
  'chunk_length_kb',
  'chunk_length_in_kb',
  'enabled',
  'crc_check_chance',
  'min_compress_ratio',
  'max_compressed_length',
];
const CODEC_OPTIONS = ['lz4_compressor_type', 'lz4_high_compressor_level'];
const ENCRYPTION_OPTIONS = [
  'cipher_algorithm',
  'secret_key_strength',
  'key_provider',
  'secret_key_provider_factory_class',
  'system_key_file',
  'kmip_host',
  'key_namespace',
  'key_keyspace',
  'iv_length',
];
/** Written by sstable-tde into CompressionInfo.db; not something a table option sets. */
const KEY_CHECK_OPTION = 'key_check_value';
const KMIP_KEY_ID_OPTION = 'kmip_key_id';
const RECORDED_OPTIONS = [
  KEY_CHECK_OPTION,
  KMIP_KEY_ID_OPTION,
  'sstable_id',
  'sstable_tag',
  'encrypted_components',
];

const MAX_CHUNK_LENGTH = 1 << 30;

function bad(message: string): TdeError {
  return new TdeError('ERR_TDE_BAD_OPTION', message);
}

/** The simple class name for any spelling Cassandra or DSE accepts, or a coded error. */
export function normalizeClassName(name: string): CompressorClass {
  const simple = name.trim().split('.').pop() ?? '';
  if (simple in COMPRESSOR_CLASSES) return simple as CompressorClass;
  if (KNOWN_UNSUPPORTED.includes(simple)) {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      `compressor class ${simple} is not supported by sstable-tde yet; supported classes: ` +
        Object.keys(COMPRESSOR_CLASSES).join(', '),
    );
  }
  throw new TdeError(
    'ERR_TDE_UNKNOWN_COMPRESSOR',
    `unknown compressor class "${name}"${didYouMean(simple, Object.keys(COMPRESSOR_CLASSES))}; ` +
      `known classes: ${Object.keys(COMPRESSOR_CLASSES).join(', ')}`,
  );
}

function parseChunkLengthKb(value: string, option: string): number {
  const kb = /^\d{1,7}$/.test(value.trim()) ? Number(value) : NaN;
  const bytes = kb * 1024;
  if (!Number.isInteger(kb) || kb <= 0 || (bytes & (bytes - 1)) !== 0 || bytes > MAX_CHUNK_LENGTH) {
    throw bad(
      `${option} must be a power of two between 1 and ${MAX_CHUNK_LENGTH / 1024}, not "${value}"`,
    );
  }
  return bytes;
}

function normalizeProvider(value: string): typeof LOCAL_PROVIDER | typeof KMIP_PROVIDER {
  const simple = value.trim().split('.').pop() ?? '';
  if (simple === LOCAL_PROVIDER || simple === KMIP_PROVIDER) return simple;
  if (simple === 'ReplicatedKeyProviderFactory') {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      'key_provider ReplicatedKeyProviderFactory keeps table keys in the dse_system keyspace, ' +
        'which an offline tool cannot read; use LocalFileSystemKeyProviderFactory or ' +
        'KmipKeyProviderFactory',
    );
  }
  throw bad(
    `unknown key_provider "${value}"${didYouMean(simple, KEY_PROVIDERS)}; ` +
      `expected ${LOCAL_PROVIDER} or ${KMIP_PROVIDER}`,
  );
}

/** Checks a key file name taken from options: a plain name, never a path. */
export function checkKeyFileName(name: string): string {
  if (name === '' || name.includes('/') || name.includes('\\') || name === '.' || name === '..') {
    throw bad(
      `system_key_file ${quote(name)} must be a file name inside system_key_directory, not a path`,
    );
  }
  return name;
}

function parseEncryption(opts: Record<string, string>): EncryptionSettings {
  const transformation = opts.cipher_algorithm ?? DEFAULT_CIPHER;
  const strength = opts.secret_key_strength ?? String(DEFAULT_STRENGTH);
  const choice = resolveCipher(transformation, strength, opts.iv_length);
  if (choice.padding === 'NoPadding' && (choice.mode === 'ECB' || choice.mode === 'CBC')) {
    throw bad(
      `cipher_algorithm ${choice.name} cannot encrypt SSTable chunks: chunks have any ` +
        `length (compressed, or the last one), and NoPadding takes only whole ` +
        `${choice.blockSize}-byte blocks; use ${choice.algorithm}/${choice.mode}/PKCS5Padding`,
    );
  }
  const provider = normalizeProvider(
    opts.key_provider ?? opts.secret_key_provider_factory_class ?? LOCAL_PROVIDER,
  );

  const settings: EncryptionSettings = {
    cipherAlgorithm: choice.name,
    strength: choice.strength,
    keyProvider: provider,
  };
  if (opts.iv_length !== undefined) settings.ivLength = Number(opts.iv_length);
  if (provider === LOCAL_PROVIDER) {
    settings.systemKeyFile = checkKeyFileName(opts.system_key_file ?? DEFAULT_SYSTEM_KEY_FILE);
  } else {
    if (!opts.kmip_host) throw bad('key_provider KmipKeyProviderFactory needs kmip_host');
    settings.kmipHost = opts.kmip_host;
    const ns = opts.key_namespace ?? opts.key_keyspace;
    if (ns !== undefined) settings.keyNamespace = ns;
  }
  if (opts[KEY_CHECK_OPTION] !== undefined) {
    if (!/^[0-9a-f]{16}$/.test(opts[KEY_CHECK_OPTION])) {
      throw bad(`${KEY_CHECK_OPTION} "${opts[KEY_CHECK_OPTION]}" is not 16 hex digits`);
    }
    settings.keyCheckValue = opts[KEY_CHECK_OPTION];
  }
  if (opts[KMIP_KEY_ID_OPTION] !== undefined) {
    if (provider !== KMIP_PROVIDER || opts[KMIP_KEY_ID_OPTION] === '') {
      throw bad(`${KMIP_KEY_ID_OPTION} belongs only to KMIP-keyed SSTables and must not be empty`);
    }
    settings.kmipKeyId = opts[KMIP_KEY_ID_OPTION];
  }
  return settings;
}

function stringify(value: unknown): string {
  return typeof value === 'string' ? value : String(value);
}

/**
 * Parses a table's `compression = {...}` map. `defaultChunkLength` is the chunk length to use
 * when the map names none (Cassandra's default depends on its version).
 */
export function parseTableCompression(
  map: Record<string, unknown>,
  defaultChunkLength: number,
): CompressionParams {
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw bad(
      `table compression options must be an object such as { class: 'LZ4Compressor' }, not ` +
        `${map === null ? 'null' : Array.isArray(map) ? 'an array' : typeof map}`,
    );
  }
  const opts: Record<string, string> = {};
  for (const [k, v] of Object.entries(map)) {
    const key = k.toLowerCase();
    if (key in opts)
      throw bad(`compression option "${key}" is given twice (option names ignore case)`);
    opts[key] = stringify(v);
  }
  // Two spellings of one option: which one was meant is anyone's guess.
  for (const [a, b] of [
    ['class', 'sstable_compression'],
    ['chunk_length_kb', 'chunk_length_in_kb'],
    ['key_provider', 'secret_key_provider_factory_class'],
    ['key_namespace', 'key_keyspace'],
  ]) {
    if (opts[a] !== undefined && opts[b] !== undefined)
      throw bad(`give either ${a} or ${b}, not both`);
  }

  const known = [...GENERIC, ...CODEC_OPTIONS, ...ENCRYPTION_OPTIONS];
  for (const k of Object.keys(opts)) {
    if (RECORDED_OPTIONS.includes(k)) {
      throw bad(`${k} is written by sstable-tde into CompressionInfo.db; it is not a table option`);
    }
    if (!known.includes(k)) {
      throw bad(`unknown compression option "${k}"${didYouMean(k, known)}`);
    }
  }

  if (opts.enabled !== undefined && opts.enabled.toLowerCase() === 'false') {
    return { enabled: false, chunkLength: 65536, codecOptions: {} };
  }
  if (opts.enabled !== undefined && opts.enabled.toLowerCase() !== 'true') {
    throw bad(`enabled must be true or false, not "${opts.enabled}"`);
  }

  const classText = opts.class ?? opts.sstable_compression;
  if (classText === undefined) throw bad('compression options need a "class"');
  // Cassandra reads an empty class name as "no compression".
  if (classText.trim() === '') return { enabled: false, chunkLength: 65536, codecOptions: {} };
  const className = normalizeClassName(classText);

  const chunkOption =
    opts.chunk_length_in_kb !== undefined ? 'chunk_length_in_kb' : 'chunk_length_kb';
  const chunkLength =
    opts[chunkOption] !== undefined
      ? parseChunkLengthKb(opts[chunkOption], chunkOption)
      : defaultChunkLength;

  const params: CompressionParams = { enabled: true, className, chunkLength, codecOptions: {} };
  for (const k of CODEC_OPTIONS) if (opts[k] !== undefined) params.codecOptions[k] = opts[k];

  const encrypting = COMPRESSOR_CLASSES[className].encrypting;
  if (encrypting) {
    params.encryption = parseEncryption(opts);
  } else {
    const stray = ENCRYPTION_OPTIONS.filter((k) => opts[k] !== undefined);
    if (stray.length > 0) {
      throw bad(
        `${stray.join(', ')} only apply to the encrypting classes (Encryptor, ` +
          `EncryptingLZ4Compressor, ...), not to ${className}`,
      );
    }
    params.maxCompressedLength = maxCompressedLengthOf(opts, chunkLength);
  }
  return params;
}

function maxCompressedLengthOf(
  opts: Record<string, string>,
  chunkLength: number,
): number | undefined {
  if (opts.max_compressed_length !== undefined) {
    const kb = Number(opts.max_compressed_length);
    if (!Number.isInteger(kb) || kb <= 0) {
      throw bad(
        `max_compressed_length must be a positive number of KiB, not ` +
          `"${opts.max_compressed_length}"`,
      );
    }
    return kb * 1024;
  }
  if (opts.min_compress_ratio !== undefined) {
    const ratio = Number(opts.min_compress_ratio);
    if (!Number.isFinite(ratio) || ratio < 0 || (ratio > 0 && ratio < 1)) {
      throw bad(
        `min_compress_ratio must be 0 (off) or at least 1, not "${opts.min_compress_ratio}"`,
      );
    }
    return ratio === 0 ? undefined : Math.ceil(chunkLength / ratio);
  }
  return undefined;
}

/**
 * Builds params from what CompressionInfo.db holds. Unknown options are kept for codecs but an
 * encrypting class's options must parse, since they say which key to use.
 */
export function paramsFromCompressionInfo(
  className: string,
  options: Record<string, string>,
  chunkLength: number,
  maxCompressedLength: number | undefined,
): CompressionParams {
  const cls = normalizeClassName(className);
  const params: CompressionParams = {
    enabled: true,
    className: cls,
    chunkLength,
    codecOptions: {},
  };
  if (maxCompressedLength !== undefined && maxCompressedLength !== 0x7fffffff) {
    params.maxCompressedLength = maxCompressedLength;
  }
  if (COMPRESSOR_CLASSES[cls].encrypting) {
    params.encryption = parseEncryption(options);
  } else {
    for (const [k, v] of Object.entries(options)) params.codecOptions[k] = v;
  }
  return params;
}

/** The options map to write into CompressionInfo.db. Never contains key bytes. */
export function compressionInfoOptions(
  params: CompressionParams,
  keyCheckValue?: string,
  keyRecord: Record<string, string> = {},
): Record<string, string> {
  const out: Record<string, string> = { ...params.codecOptions };
  const e = params.encryption;
  if (e) {
    out.cipher_algorithm = e.cipherAlgorithm;
    out.secret_key_strength = String(e.strength);
    if (e.ivLength !== undefined) out.iv_length = String(e.ivLength);
    out.key_provider = e.keyProvider;
    if (e.systemKeyFile !== undefined) out.system_key_file = e.systemKeyFile;
    if (e.kmipHost !== undefined) out.kmip_host = e.kmipHost;
    if (e.keyNamespace !== undefined) out.key_namespace = e.keyNamespace;
    if (keyCheckValue !== undefined) out[KEY_CHECK_OPTION] = keyCheckValue;
    Object.assign(out, keyRecord);
  }
  return out;
}

/**
 * True when an SSTable written with `onDisk` already matches what the table asks for, so a
 * rewrite (without -a) would change nothing. Key check values are not compared here: the
 * rewrite planner checks the key itself (a key file replaced under the same name).
 */
export function sameCompression(onDisk: CompressionParams, wanted: CompressionParams): boolean {
  if (onDisk.enabled !== wanted.enabled) return false;
  if (!wanted.enabled) return true;
  if (onDisk.className !== wanted.className || onDisk.chunkLength !== wanted.chunkLength)
    return false;
  if (onDisk.maxCompressedLength !== wanted.maxCompressedLength) return false;
  const codecKeys = new Set([
    ...Object.keys(onDisk.codecOptions),
    ...Object.keys(wanted.codecOptions),
  ]);
  for (const k of codecKeys) if (onDisk.codecOptions[k] !== wanted.codecOptions[k]) return false;
  const a = onDisk.encryption;
  const b = wanted.encryption;
  if (!a || !b) return a === b;
  return (
    a.cipherAlgorithm === b.cipherAlgorithm &&
    a.strength === b.strength &&
    a.keyProvider === b.keyProvider &&
    a.systemKeyFile === b.systemKeyFile &&
    a.kmipHost === b.kmipHost &&
    a.keyNamespace === b.keyNamespace
  );
}

/** A one-line description for describe and progress output. */
export function describeParams(p: CompressionParams): string {
  if (!p.enabled) return 'uncompressed';
  const chunk = `${p.chunkLength / 1024} KiB chunks`;
  const e = p.encryption;
  if (!e) return `${p.className}, ${chunk}`;
  const key =
    e.keyProvider === LOCAL_PROVIDER
      ? `key file ${e.systemKeyFile}`
      : `KMIP group ${e.kmipHost}${e.keyNamespace ? ` namespace ${e.keyNamespace}` : ''}`;
  return `${p.className} ${e.cipherAlgorithm} ${e.strength}-bit, ${key}, ${chunk}`;
}
