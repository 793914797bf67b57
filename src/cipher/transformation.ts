/**
 * JCE cipher transformations (`ALG/MODE/PADDING`) as DSE table options name them, and the key
 * strengths each algorithm takes. Everything here is decided in TypeScript; the addon receives
 * only the resulting OpenSSL name, IV length and padding flag.
 */
import { randomBytes } from 'node:crypto';

import { TdeError } from '../errors';
import { quote } from '../util/redact';

export type CipherAlgorithm = 'AES' | 'DES' | 'DESede' | 'Blowfish' | 'RC2';
export type CipherMode = 'ECB' | 'CBC' | 'CTR' | 'GCM';
export type CipherPadding = 'PKCS5Padding' | 'NoPadding';

interface AlgorithmInfo {
  name: CipherAlgorithm;
  /** Cipher block size in bytes; also the CBC IV length DSE writes. */
  blockSize: number;
  /** OpenSSL's name stem; `-ECB` or `-CBC` is appended. */
  evpStem: (bits: number) => string;
  /** Key length in bytes for a strength, or undefined when the strength is not accepted. */
  keyBytes: (bits: number) => number | undefined;
  /** The accepted strengths, in words, for error messages. */
  strengths: string;
}

const multipleOf8In = (lo: number, hi: number) => (bits: number) =>
  bits >= lo && bits <= hi && bits % 8 === 0 ? bits / 8 : undefined;

const ALGORITHMS: Record<string, AlgorithmInfo> = {
  aes: {
    name: 'AES',
    blockSize: 16,
    evpStem: (bits) => `AES-${bits}`,
    keyBytes: (bits) => ({ 128: 16, 192: 24, 256: 32 })[bits],
    strengths: '128, 192 or 256',
  },
  des: {
    name: 'DES',
    blockSize: 8,
    evpStem: () => 'DES',
    keyBytes: (bits) => (bits === 56 ? 8 : undefined),
    strengths: '56',
  },
  desede: {
    name: 'DESede',
    blockSize: 8,
    // Both strengths run as three-key EDE: a 112-bit key is stored, as JCE stores it, with its
    // first 8 bytes repeated as the third key.
    evpStem: () => 'DES-EDE3',
    keyBytes: (bits) => (bits === 112 || bits === 168 ? 24 : undefined),
    strengths: '112 or 168',
  },
  blowfish: {
    name: 'Blowfish',
    blockSize: 8,
    evpStem: () => 'BF',
    keyBytes: multipleOf8In(32, 448),
    strengths: '32 to 448 in steps of 8',
  },
  rc2: {
    name: 'RC2',
    blockSize: 8,
    evpStem: () => 'RC2',
    keyBytes: multipleOf8In(40, 128),
    strengths: '40 to 128 in steps of 8',
  },
};
// JCE's aliases for the same algorithms.
ALGORITHMS.tripledes = ALGORITHMS.desede;

const MODES: Record<string, CipherMode> = { ecb: 'ECB', cbc: 'CBC', ctr: 'CTR', gcm: 'GCM' };

/** IV (nonce) bytes per chunk for the AES-only stream modes. */
const STREAM_IV: Partial<Record<CipherMode, number>> = { CTR: 16, GCM: 12 };
/** GCM's tag: the full 16 bytes, as JCE writes by default. */
const GCM_TAG_LENGTH = 16;
const PADDINGS: Record<string, CipherPadding> = {
  pkcs5padding: 'PKCS5Padding',
  nopadding: 'NoPadding',
};

const ACCEPTED =
  'ALG/MODE/PADDING with ALG one of AES, DES, DESede, Blowfish, RC2; MODE ECB or CBC (and for ' +
  'AES also CTR or GCM, with NoPadding); PADDING PKCS5Padding or NoPadding (a bare ALG means ' +
  'ALG/ECB/PKCS5Padding, as in JCE)';

/** A parsed transformation, before a key strength is chosen. */
export interface Transformation {
  algorithm: CipherAlgorithm;
  mode: CipherMode;
  padding: CipherPadding;
  /** Canonical JCE spelling, for example `AES/CBC/PKCS5Padding`. */
  name: string;
  blockSize: number;
}

/** A transformation with its strength: everything needed to build a cipher. */
export interface CipherChoice extends Transformation {
  /** Key strength in bits, as written in table options. */
  strength: number;
  /** Key length in bytes the cipher is given. */
  keyLength: number;
  /** Bytes of IV before each chunk's ciphertext: 0 for ECB. */
  ivLength: number;
  evpName: string;
  /** RC2's effective key bits (the key's length in bits, as JCE uses); 0 otherwise. */
  rc2KeyBits: number;
  /** Authentication tag bytes after each chunk's ciphertext: 16 for GCM, else 0. */
  tagLength: number;
}

function closest(word: string, options: string[]): string | undefined {
  const lower = word.toLowerCase();
  return options.find((o) => o.toLowerCase().startsWith(lower.slice(0, 3)));
}

/** Parses a JCE transformation name, case-insensitively as JCE does. */
export function parseTransformation(text: string): Transformation {
  if (typeof text !== 'string' || text.trim() === '') {
    throw new TdeError('ERR_TDE_UNKNOWN_CIPHER', `cipher_algorithm is empty; expected ${ACCEPTED}`);
  }
  const parts = text.trim().split('/');
  if (parts.length !== 1 && parts.length !== 3) {
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `cipher_algorithm ${quote(text)} is not a transformation; expected ${ACCEPTED}`,
    );
  }

  const info = ALGORITHMS[parts[0].toLowerCase()];
  if (!info) {
    const hint = closest(parts[0], ['AES', 'DES', 'DESede', 'Blowfish', 'RC2']);
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `unknown cipher algorithm ${quote(parts[0])} in ${quote(text)}` +
        (hint ? ` (did you mean ${hint}?)` : '') +
        `; expected ${ACCEPTED}`,
    );
  }

  const mode = parts.length === 3 ? MODES[parts[1].toLowerCase()] : 'ECB';
  if (!mode) {
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `unsupported cipher mode ${quote(parts[1])} in ${quote(text)}; expected ECB or CBC (or, ` +
        `for AES, CTR or GCM)`,
    );
  }
  if (STREAM_IV[mode] !== undefined && info.name !== 'AES') {
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `${mode} mode is offered for AES only, not ${info.name}; ` +
        `use ${info.name}/CBC/PKCS5Padding or AES/${mode}/NoPadding`,
    );
  }
  const padding = parts.length === 3 ? PADDINGS[parts[2].toLowerCase()] : 'PKCS5Padding';
  if (!padding) {
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `unsupported padding ${quote(parts[2])} in ${quote(text)}; expected PKCS5Padding or ` +
        `NoPadding`,
    );
  }
  if (STREAM_IV[mode] !== undefined && padding !== 'NoPadding') {
    throw new TdeError(
      'ERR_TDE_UNKNOWN_CIPHER',
      `AES/${mode} takes no padding: write AES/${mode}/NoPadding`,
    );
  }

  return {
    algorithm: info.name,
    mode,
    padding,
    name: `${info.name}/${mode}/${padding}`,
    blockSize: info.blockSize,
  };
}

/**
 * Parses a strength as table options give it (a number or a decimal string) and checks that
 * the algorithm takes it.
 */
export function resolveCipher(
  transformation: string,
  strength: number | string,
  ivLengthOption?: number | string,
): CipherChoice {
  const t = parseTransformation(transformation);
  const info = ALGORITHMS[t.algorithm.toLowerCase()];

  const text =
    typeof strength === 'string'
      ? strength.trim()
      : typeof strength === 'number'
        ? String(strength)
        : '';
  const bits =
    typeof strength === 'number' ? strength : /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  const keyLength = Number.isInteger(bits) ? info.keyBytes(bits) : undefined;
  if (keyLength === undefined) {
    throw new TdeError(
      'ERR_TDE_KEY_STRENGTH',
      `secret_key_strength ${quote(strength)} is not valid for ${t.algorithm}; ` +
        `${t.algorithm} takes ${info.strengths}`,
    );
  }

  // DSE writes a block-sized IV for CBC; CTR takes a full counter block and GCM a 12-byte nonce.
  const ivLength = t.mode === 'ECB' ? 0 : (STREAM_IV[t.mode] ?? t.blockSize);
  if (ivLength > 0 && ivLengthOption !== undefined && ivLengthOption !== '') {
    // JCE rejects any other IV length for these modes, so DSE can only have written this one.
    if (Number(ivLengthOption) !== ivLength) {
      throw new TdeError(
        'ERR_TDE_BAD_OPTION',
        `iv_length ${JSON.stringify(ivLengthOption)} does not fit ${t.name}: ` +
          `${t.mode} with ${t.algorithm} needs an IV of exactly ${ivLength} bytes`,
      );
    }
  }

  return {
    ...t,
    strength: bits,
    keyLength,
    ivLength,
    evpName: `${info.evpStem(bits)}-${t.mode}`,
    rc2KeyBits: t.algorithm === 'RC2' ? bits : 0,
    tagLength: t.mode === 'GCM' ? GCM_TAG_LENGTH : 0,
  };
}

/**
 * Checks key bytes against a cipher choice and returns the bytes the cipher takes. A 16-byte
 * DESede key (k1 k2) becomes k1 k2 k1. Never includes key bytes in its errors.
 */
export function normalizeKey(choice: CipherChoice, key: Uint8Array): Buffer {
  const bytes = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  if (choice.algorithm === 'DESede' && bytes.length === 16) {
    return Buffer.concat([bytes, bytes.subarray(0, 8)]);
  }
  if (bytes.length !== choice.keyLength) {
    throw new TdeError(
      'ERR_TDE_KEY_LENGTH',
      `${choice.algorithm} with a ${choice.strength}-bit strength needs a ` +
        `${choice.keyLength}-byte key, but the key given has ${bytes.length} bytes`,
    );
  }
  return bytes;
}

/** Sets odd parity in each byte, as JCE's DES and DESede key generators do. */
function setDesParity(key: Buffer): void {
  for (let i = 0; i < key.length; i++) {
    let b = key[i] & 0xfe;
    let ones = 0;
    for (let v = b; v; v >>= 1) ones += v & 1;
    if (ones % 2 === 0) b |= 1;
    key[i] = b;
  }
}

/** Generates a new random key for a cipher choice, laid out as JCE's KeyGenerator lays it out. */
export function generateKey(choice: CipherChoice): Buffer {
  if (choice.algorithm === 'DESede' && choice.strength === 112) {
    const k = randomBytes(16);
    setDesParity(k);
    return Buffer.concat([k, k.subarray(0, 8)]);
  }
  const key = randomBytes(choice.keyLength);
  if (choice.algorithm === 'DES' || choice.algorithm === 'DESede') setDesParity(key);
  return key;
}

/** Every transformation name this package accepts, in canonical spelling. */
export function supportedTransformations(): string[] {
  const out: string[] = [];
  for (const a of ['AES', 'DES', 'DESede', 'Blowfish', 'RC2']) {
    for (const m of ['ECB', 'CBC']) {
      for (const p of ['PKCS5Padding', 'NoPadding']) out.push(`${a}/${m}/${p}`);
    }
  }
  out.push('AES/CTR/NoPadding', 'AES/GCM/NoPadding');
  return out;
}
