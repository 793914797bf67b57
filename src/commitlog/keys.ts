/**
 * Where a segment's key comes from: a JCEKS key store (Cassandra's JKSKeyProvider, for segments
 * Cassandra wrote), or this package's own providers (a local key file name, or kmip://GROUP/ID,
 * for segments written with system_info_encryption).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { TdeConfig, parseKmipUrl } from '../config/config';
import { readJceksSecretKey } from '../config/jceks';
import { TdeError } from '../errors';
import { readKeyFile } from '../keys/key-file';
import { KeyProviders } from '../keys/provider';
import { SegmentKeyResolver } from './segment';

export interface KeyStoreOptions {
  file: string;
  password: string;
  /** Defaults to the store password, as Cassandra's key_password usually is. */
  keyPassword?: string;
  /** Only JCEKS holds secret keys the way Cassandra keeps them. */
  type?: string;
}

export function keyStoreResolver(store: KeyStoreOptions): SegmentKeyResolver {
  const type = (store.type ?? 'JCEKS').toUpperCase();
  if (type !== 'JCEKS') {
    throw new TdeError(
      'ERR_TDE_UNSUPPORTED',
      `store type ${store.type} cannot hold Cassandra's commit log keys; ` +
        'Cassandra keeps them in a JCEKS store (store_type: JCEKS)',
    );
  }
  return async (alias) =>
    readJceksSecretKey(store.file, store.password, alias, store.keyPassword ?? store.password).key;
}

function isSymlink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Keys for segments sstable-tde wrote: the alias is a key file name or kmip://GROUP/ID. */
export function configResolver(config: TdeConfig, keys: KeyProviders): SegmentKeyResolver {
  return async (alias) => {
    const url = parseKmipUrl(alias);
    if (url) return keys.kmipProvider.client(url.group).getKey(url.id);
    if (alias === '' || alias.includes('/')) {
      throw new TdeError(
        'ERR_TDE_KEY_NOT_FOUND',
        `segment key alias "${alias}" is neither a key file name nor kmip://GROUP/ID; ` +
          'for a segment Cassandra wrote, give its key store (--keystore)',
      );
    }
    const file = path.join(config.systemKeyDirectory, alias);
    if (!fs.existsSync(file) && !isSymlink(file)) {
      // Not readKeyFile's "create it": a new key never decrypts a segment already written.
      throw new TdeError(
        'ERR_TDE_KEY_NOT_FOUND',
        `segment key "${alias}" is not a key file in ` +
          `system_key_directory ${config.systemKeyDirectory}. For a segment Cassandra wrote ` +
          '(transparent_data_encryption_options), give its key store: --keystore FILE ' +
          '--keystore-password PASSWORD; for one sstable-tde wrote, restore the key file it was ' +
          'written with, or point system_key_directory (--config) at it',
        { file },
      );
    }
    const [entry] = readKeyFile(file);
    return entry.key;
  };
}
