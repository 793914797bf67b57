/**
 * Java's JCEKS key store, read without a JVM: the format Cassandra's `JKSKeyProvider` uses for
 * commit log and hints encryption keys (`store_type: JCEKS`).
 *
 * Layout (big-endian): magic 0xCECECECE, version (1 or 2), entry count, then per entry a tag
 * (1 private key, 2 trusted certificate, 3 secret key), the alias (lower-cased by Java), a
 * timestamp and the entry's data; then a SHA-1 over the password (UTF-16), the words "Mighty
 * Aphrodite" and everything before it, which tells a wrong store password from a damaged file.
 *
 * A secret key entry is a serialized `SealedObject` holding the key, itself serialized, encrypted
 * with Sun's PBEWithMD5AndTripleDES under the key's password.
 */
import { createDecipheriv, createHash } from 'node:crypto';

import { TdeError } from '../errors';
import { JavaObject, JavaStreamReader } from './java-serial';
import { readStoreFile } from './keystore';

const MAGIC = 0xcececece;
const MAX_ENTRIES = 10000;

export interface JceksSecretKey {
  alias: string;
  algorithm: string;
  key: Buffer;
}

interface SealedEntry {
  alias: string;
  sealed: JavaObject;
}

function storeError(file: string, message: string): TdeError {
  return new TdeError('ERR_TDE_CONFIG', `key store ${file}: ${message}`, { file });
}

/** Java's 16-bit chars, big-endian, as the store's integrity hash takes the password. */
function passwordUtf16(password: string): Buffer {
  const b = Buffer.alloc(password.length * 2);
  for (let i = 0; i < password.length; i++) b.writeUInt16BE(password.charCodeAt(i), i * 2);
  return b;
}

/** Parses the store and checks its integrity hash; returns its sealed secret-key entries. */
function parseStore(data: Buffer, storePassword: string, file: string): SealedEntry[] {
  if (data.length < 12 + 20 || data.readUInt32BE(0) !== MAGIC) {
    throw storeError(file, 'not a JCEKS key store (no 0xCECECECE magic); check store_type');
  }
  const digestAt = data.length - 20;
  const expected = createHash('sha1')
    .update(passwordUtf16(storePassword))
    .update('Mighty Aphrodite', 'utf8')
    .update(data.subarray(0, digestAt))
    .digest();
  if (!expected.equals(data.subarray(digestAt))) {
    throw new TdeError(
      'ERR_TDE_KEYSTORE_PASSWORD',
      `key store ${file}: the store password is wrong ` +
        '(keystore_password), or the file was altered',
      { file },
    );
  }

  const r = new JavaStreamReader(data.subarray(0, digestAt), `key store ${file}`);
  r.bytes(4);
  const version = r.i32();
  if (version !== 1 && version !== 2)
    throw storeError(file, `unsupported JCEKS version ${version}`);
  const count = r.i32();
  if (count < 0 || count > MAX_ENTRIES) throw storeError(file, `implausible entry count ${count}`);

  const out: SealedEntry[] = [];
  for (let i = 0; i < count; i++) {
    const tag = r.i32();
    const alias = r.utf();
    r.bytes(8); // creation date
    if (tag === 1) {
      r.bytes(r.i32()); // encrypted private key
      const certs = r.i32();
      if (certs < 0 || certs > 100)
        throw storeError(file, `implausible certificate chain of ${certs}`);
      for (let c = 0; c < certs; c++) {
        if (version === 2) r.utf();
        r.bytes(r.i32());
      }
    } else if (tag === 2) {
      if (version === 2) r.utf();
      r.bytes(r.i32());
    } else if (tag === 3) {
      const sealed = r.readStream();
      if (!sealed || typeof sealed !== 'object' || !('fields' in sealed)) {
        throw storeError(file, `secret key entry ${alias} holds no sealed object`);
      }
      out.push({ alias, sealed: sealed as JavaObject });
    } else {
      throw storeError(file, `unknown entry type ${tag} for ${alias}`);
    }
  }
  return out;
}

/**
 * Sun's PBEWithMD5AndTripleDES key and IV derivation: each half of the 8-byte salt (the first
 * reversed if both are equal) hashed with the password `iterations` times by MD5, the two 16-byte
 * results giving a 24-byte DESede key and an 8-byte IV.
 */
function pbeMd5TripleDes(
  password: string,
  salt: Buffer,
  iterations: number,
): { key: Buffer; iv: Buffer } {
  const s = Buffer.from(salt);
  if (s.subarray(0, 4).equals(s.subarray(4, 8))) {
    [s[0], s[3]] = [s[3], s[0]];
    [s[1], s[2]] = [s[2], s[1]];
  }
  // Java's PBEKey keeps the low 7 bits of each password char.
  const pw = Buffer.from([...password].map((c) => c.charCodeAt(0) & 0x7f));
  const result = Buffer.alloc(32);
  for (let half = 0; half < 2; half++) {
    let h: Buffer = s.subarray(half * 4, half * 4 + 4);
    for (let j = 0; j < iterations; j++) h = createHash('md5').update(h).update(pw).digest();
    h.copy(result, half * 16);
  }
  return { key: result.subarray(0, 24), iv: result.subarray(24, 32) };
}

/** Salt and iteration count from DER `SEQUENCE { OCTET STRING salt, INTEGER iterations }`. */
function pbeParams(der: Buffer, file: string, alias: string): { salt: Buffer; iterations: number } {
  const fail = () => storeError(file, `secret key ${alias} has unreadable protection parameters`);
  if (der[0] !== 0x30 || der[2] !== 0x04) throw fail();
  const saltLen = der[3];
  const salt = der.subarray(4, 4 + saltLen);
  const at = 4 + saltLen;
  if (salt.length !== 8 || der[at] !== 0x02) throw fail();
  const intLen = der[at + 1];
  if (intLen < 1 || intLen > 4 || at + 2 + intLen > der.length) throw fail();
  const iterations = der.readUIntBE(at + 2, intLen);
  // Java's own bound (com.sun.crypto.provider.KeyProtector): any store it writes passes.
  if (iterations < 1 || iterations > 5_000_000) throw fail();
  return { salt, iterations };
}

function unseal(entry: SealedEntry, keyPassword: string, file: string): JceksSecretKey {
  const f = entry.sealed.fields;
  const params = f.encodedParams;
  const content = f.encryptedContent;
  if (
    !Buffer.isBuffer(params) ||
    !Buffer.isBuffer(content) ||
    f.sealAlg !== 'PBEWithMD5AndTripleDES'
  ) {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      `key store ${file}: secret key ${entry.alias} is sealed with ` +
        `${String(f.sealAlg)}, which sstable-tde cannot open (only PBEWithMD5AndTripleDES, ` +
        `JCEKS's own)`,
      { file },
    );
  }
  const { salt, iterations } = pbeParams(params, file, entry.alias);
  const { key, iv } = pbeMd5TripleDes(keyPassword, salt, iterations);
  let plain: Buffer;
  try {
    const d = createDecipheriv('des-ede3-cbc', key, iv);
    plain = Buffer.concat([d.update(content), d.final()]);
  } catch {
    throw new TdeError(
      'ERR_TDE_KEYSTORE_PASSWORD',
      `key store ${file}: the password of key ${entry.alias} is ` +
        'wrong (key_password), or the entry is damaged',
      { file },
    );
  } finally {
    key.fill(0);
  }
  try {
    const obj = new JavaStreamReader(
      plain,
      `key ${entry.alias} in ${file}`,
    ).readStream() as JavaObject | null;
    const fields = obj?.fields ?? {};
    // javax.crypto.spec.SecretKeySpec, or java.security.KeyRep for keys stored by newer JDKs.
    const bytes = fields.key ?? fields.encoded;
    const algorithm = fields.algorithm;
    if (!Buffer.isBuffer(bytes) || typeof algorithm !== 'string') {
      throw storeError(
        file,
        `key ${entry.alias} decrypts to ${obj?.className ?? 'nothing'}, not a secret key ` +
          '(is key_password right?)',
      );
    }
    return { alias: entry.alias, algorithm, key: Buffer.from(bytes) };
  } catch (err) {
    if (err instanceof TdeError && err.message.includes('decrypts to')) throw err;
    throw new TdeError(
      'ERR_TDE_KEYSTORE_PASSWORD',
      `key store ${file}: the password of key ${entry.alias} is ` +
        'wrong (key_password), or the entry is damaged',
      { file },
    );
  } finally {
    plain.fill(0);
  }
}

/**
 * Reads one secret key out of a JCEKS file. Aliases compare case-insensitively, as Java stores
 * them.
 */
export function readJceksSecretKey(
  file: string,
  storePassword: string,
  alias: string,
  keyPassword = storePassword,
): JceksSecretKey {
  const entries = parseStore(readStoreFile(file, 'key store'), storePassword, file);
  const entry = entries.find((e) => e.alias.toLowerCase() === alias.toLowerCase());
  if (!entry) {
    throw new TdeError(
      'ERR_TDE_KEY_NOT_FOUND',
      `key store ${file} has no secret key "${alias}" (it holds ` +
        `${entries.map((e) => e.alias).join(', ') || 'none'})`,
      { file, key: alias },
    );
  }
  return unseal(entry, keyPassword, file);
}

/** The aliases of the secret keys in a JCEKS file. */
export function listJceksSecretKeys(file: string, storePassword: string): string[] {
  return parseStore(readStoreFile(file, 'key store'), storePassword, file).map((e) => e.alias);
}
