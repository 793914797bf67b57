/**
 * Key stores and trust stores for KMIP's TLS: Java's JKS (jks-js), PKCS12 (node-forge; both the
 * kind OpenSSL writes, certificates only included, and the kind keytool writes) and PEM files.
 * Everything comes out as PEM for Node's TLS. Passwords never appear in errors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as jks from 'jks-js';
import * as forge from 'node-forge';

import { fromSystem, TdeError } from '../errors';

export type StoreType = 'jks' | 'pkcs12' | 'pem';

export interface LoadedStore {
  /** Certificates, PEM: the chain of the key entry (key store) or the trusted ones (trust store). */
  certs: string[];
  /** The private key, PEM, for a key store. */
  key?: string;
}

export function storeType(file: string, declared: string | undefined): StoreType {
  const t = (declared ?? '').trim().toLowerCase();
  if (t === 'jks' || t === 'pkcs12' || t === 'pem') return t;
  if (t === 'pfx' || t === 'p12') return 'pkcs12';
  if (t !== '') {
    throw new TdeError('ERR_TDE_CONFIG', `store type "${declared}" for ${file} is not one of jks, pkcs12, pem`, { file });
  }
  const ext = path.extname(file).toLowerCase();
  if (ext === '.p12' || ext === '.pfx') return 'pkcs12';
  if (ext === '.pem' || ext === '.crt' || ext === '.cer') return 'pem';
  return 'jks';
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

function fromPem(text: string): LoadedStore {
  const certs: string[] = [];
  let key: string | undefined;
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (m[1] === 'CERTIFICATE') certs.push(m[0]);
    else if (m[1].endsWith('PRIVATE KEY')) key ??= m[0];
  }
  return { certs, key };
}

function fromJks(data: Buffer, password: string): LoadedStore {
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

function fromPkcs12(data: Buffer, password: string): LoadedStore {
  const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(data.toString('binary')), password);
  const certBags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag] ?? [];
  const keyBags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag })[forge.pki.oids.pkcs8ShroudedKeyBag] ?? []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag })[forge.pki.oids.keyBag] ?? []),
  ];
  const certs = certBags.filter((b) => b.cert).map((b) => forge.pki.certificateToPem(b.cert as forge.pki.Certificate));
  const keyBag = keyBags.find((b) => b.key);
  const key = keyBag ? forge.pki.privateKeyToPem(keyBag.key as forge.pki.PrivateKey) : undefined;
  return { certs, key };
}

/**
 * Loads a store. `role` says what it is for, so that an empty one can be reported as such: a
 * trust store must hold at least one certificate, a key store a key and its certificate.
 */
export function loadStore(file: string, declaredType: string | undefined, password: string | undefined,
  role: 'keystore' | 'truststore', setting: string): LoadedStore {
  const type = storeType(file, declaredType);
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw fromSystem(err, file, `read ${setting}`);
  }

  let store: LoadedStore;
  try {
    if (type === 'pem') store = fromPem(data.toString('utf8'));
    else if (type === 'jks') store = fromJks(data, password ?? '');
    else store = fromPkcs12(data, password ?? '');
  } catch (err) {
    const msg = (err as Error).message ?? '';
    const likelyPassword = /password|MAC|integrity|decrypt|tampered/i.test(msg);
    throw new TdeError('ERR_TDE_CONFIG', `cannot open ${setting} ${file} as ${type.toUpperCase()}: ` +
      (likelyPassword ? 'wrong password (check the matching _password setting), or the file is damaged'
        : `${msg.slice(0, 120) || 'unreadable'} (is the store type right?)`), { file }, err);
  }

  if (role === 'truststore' && store.certs.length === 0) {
    throw new TdeError('ERR_TDE_CONFIG', `${setting} ${file} holds no certificate to trust`, { file });
  }
  if (role === 'keystore' && (!store.key || store.certs.length === 0)) {
    throw new TdeError('ERR_TDE_CONFIG', `${setting} ${file} holds no private key with its certificate; ` +
      'a KMIP client needs both', { file });
  }
  return store;
}
