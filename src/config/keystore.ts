/**
 * Key stores and trust stores for KMIP's TLS: Java's JKS (jks-js), PKCS12 (node-forge; both the
 * kind OpenSSL writes, certificates only included, and the kind keytool writes) and PEM files.
 * Everything comes out as PEM for Node's TLS. Passwords never appear in errors.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';

import * as jks from 'jks-js';
import * as forge from 'node-forge';

import { TdeError } from '../errors';
import { readRegularFile } from '../util/files';

export type StoreType = 'jks' | 'pkcs12' | 'pem';

export interface LoadedStore {
  /**
   * Certificates, PEM: the chain of the key entry (key store) or the trusted ones (trust store).
   */
  certs: string[];
  /** The private key, PEM, for a key store. */
  key?: string;
}

export function storeType(file: string, declared: string | undefined): StoreType {
  const t = (declared ?? '').trim().toLowerCase();
  if (t === 'jks' || t === 'pkcs12' || t === 'pem') return t;
  if (t === 'pfx' || t === 'p12') return 'pkcs12';
  if (t !== '') {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `store type "${declared}" for ${file} is not one of jks, pkcs12, pem`,
      { file },
    );
  }
  const ext = path.extname(file).toLowerCase();
  if (ext === '.p12' || ext === '.pfx') return 'pkcs12';
  if (ext === '.pem' || ext === '.crt' || ext === '.cer') return 'pem';
  return 'jks';
}

/** Stores are a few certificates and keys; anything this big is not one (or not a file). */
const MAX_STORE_BYTES = 16 * 1024 * 1024;

const PEM_MARKER = /-----(BEGIN|END) ([A-Z0-9 ]{1,64})-----/g;

/**
 * PEM blocks, in one pass over the markers: a BEGIN followed by the END of the same label is a
 * block, anything else is skipped (a regular expression pairing them would backtrack over the
 * whole file for each BEGIN that has no END).
 */
function fromPem(text: string): LoadedStore {
  const certs: string[] = [];
  let key: string | undefined;
  let open: RegExpExecArray | undefined;
  for (const m of text.matchAll(PEM_MARKER)) {
    if (m[1] === 'BEGIN') {
      open = m;
      continue;
    }
    if (open && open[2] === m[2]) {
      const block = text.slice(open.index, (m.index ?? 0) + m[0].length);
      if (m[2] === 'CERTIFICATE') certs.push(block);
      else if (m[2].endsWith('PRIVATE KEY')) key ??= block;
    }
    open = undefined;
  }
  return { certs, key };
}

/** Java's store digest: SHA-1 over the password (UTF-16), "Mighty Aphrodite" and the body. */
function javaStoreDigest(password: string, body: Buffer): Buffer {
  const pw = Buffer.alloc(password.length * 2);
  for (let i = 0; i < password.length; i++) pw.writeUInt16BE(password.charCodeAt(i), i * 2);
  return createHash('sha1').update(pw).update('Mighty Aphrodite', 'utf8').update(body).digest();
}

function fromJks(data: Buffer, password: string): LoadedStore {
  // The store's digest is checked before its parser sees a byte: a damaged or hostile file then
  // never reaches it, and only what the password's holder wrote is parsed.
  if (data.length < 32 || data.readUInt32BE(0) !== 0xfeedfeed) {
    throw new Error('not a JKS store (no 0xFEEDFEED magic)');
  }
  const body = data.subarray(0, data.length - 20);
  if (!javaStoreDigest(password, body).equals(data.subarray(data.length - 20))) {
    throw new Error('wrong password, or the file was altered (integrity digest)');
  }
  const entries = jks.toPem(data, password);
  const certs: string[] = [];
  let key: string | undefined;
  for (const e of Object.values(entries)) {
    if (e.key && !key) {
      key = e.key;
      if (e.cert) certs.unshift(...fromPem(e.cert).certs);
    } else if (e.ca) {
      certs.push(e.ca);
    } else if (e.cert) {
      certs.push(...fromPem(e.cert).certs);
    }
  }
  return { certs, key };
}

/**
 * More MAC iterations than any tool writes (OpenSSL 2048, keytool 10000 to 100000): the MAC is
 * computed before the password is known to be right, so a damaged count must not run for hours.
 */
const MAX_MAC_ITERATIONS = 1_000_000;

/** PFX ::= SEQUENCE { version, authSafe, macData SEQUENCE { mac, salt, iterations } OPTIONAL } */
function checkMacIterations(pfx: forge.asn1.Asn1): void {
  const macData = Array.isArray(pfx.value) ? pfx.value[2] : undefined;
  const iterations = macData && Array.isArray(macData.value) ? macData.value[2] : undefined;
  if (!iterations || typeof iterations.value !== 'string') return;
  const bytes = Buffer.from(iterations.value, 'binary');
  const count =
    bytes.length > 6 ? Infinity : bytes.length === 0 ? 0 : bytes.readUIntBE(0, bytes.length);
  if (count > MAX_MAC_ITERATIONS) {
    throw new Error(
      `its MAC declares ${count} iterations, more than the ${MAX_MAC_ITERATIONS} ` +
        'accepted (damaged?)',
    );
  }
}

function fromPkcs12(data: Buffer, password: string): LoadedStore {
  const asn1 = forge.asn1.fromDer(data.toString('binary'));
  checkMacIterations(asn1);
  const p12 = forge.pkcs12.pkcs12FromAsn1(asn1, password);
  const certBags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag] ?? [];
  const keyBags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag })[
      forge.pki.oids.pkcs8ShroudedKeyBag
    ] ?? []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag })[forge.pki.oids.keyBag] ?? []),
  ];
  const certs = certBags
    .filter((b) => b.cert)
    .map((b) => forge.pki.certificateToPem(b.cert as forge.pki.Certificate));
  const keyBag = keyBags.find((b) => b.key);
  const key = keyBag ? forge.pki.privateKeyToPem(keyBag.key as forge.pki.PrivateKey) : undefined;
  return { certs, key };
}

/** Reads a key or trust store: a regular file of plausible size (a FIFO or device is refused). */
export function readStoreFile(file: string, setting: string): Buffer {
  return readRegularFile(file, MAX_STORE_BYTES, 'ERR_TDE_CONFIG', setting);
}

/**
 * Loads a store. `role` says what it is for, so that an empty one can be reported as such: a
 * trust store must hold at least one certificate, a key store a key and its certificate.
 */
export function loadStore(
  file: string,
  declaredType: string | undefined,
  password: string | undefined,
  role: 'keystore' | 'truststore',
  setting: string,
): LoadedStore {
  const type = storeType(file, declaredType);
  const data = readStoreFile(file, setting);

  let store: LoadedStore;
  try {
    if (type === 'pem') store = fromPem(data.toString('utf8'));
    else if (type === 'jks') store = fromJks(data, password ?? '');
    else store = fromPkcs12(data, password ?? '');
  } catch (err) {
    const msg = (err as Error).message ?? '';
    const likelyPassword = /password|MAC|integrity|decrypt|tampered/i.test(msg);
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `cannot open ${setting} ${file} as ${type.toUpperCase()}: ` +
        (likelyPassword
          ? 'wrong password (check the matching _password setting), or the file is damaged'
          : `${msg.slice(0, 120) || 'unreadable'} (is the store type right?)`),
      { file },
      err,
    );
  }

  if (role === 'truststore' && store.certs.length === 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${setting} ${file} holds no certificate to trust`, {
      file,
    });
  }
  if (role === 'keystore' && (!store.key || store.certs.length === 0)) {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `${setting} ${file} holds no private key with its certificate; ` + 'a KMIP client needs both',
      { file },
    );
  }
  return store;
}
