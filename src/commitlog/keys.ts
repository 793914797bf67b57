/**
 * Where a segment's key comes from: a JCEKS key store (Cassandra's JKSKeyProvider, for segments
 * Cassandra wrote), or this package's own providers (a local key file name, or kmip://GROUP/ID,
 * for segments written with system_info_encryption).
 */
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
    throw new TdeError('ERR_TDE_UNSUPPORTED', `store type ${store.type} cannot hold Cassandra's commit log keys; ` +
      'Cassandra keeps them in a JCEKS store (store_type: JCEKS)');
  }
  return async (alias) => readJceksSecretKey(store.file, store.password, alias, store.keyPassword ?? store.password).key;
}

/** Keys for segments sstable-tde wrote: the alias is a key file name or kmip://GROUP/ID. */
export function configResolver(config: TdeConfig, keys: KeyProviders): SegmentKeyResolver {
  return async (alias) => {
    const url = parseKmipUrl(alias);
    if (url) return keys.kmipProvider.client(url.group).getKey(url.id);
    if (alias === '' || alias.includes('/')) {
      throw new TdeError('ERR_TDE_KEY_NOT_FOUND', `segment key alias "${alias}" is neither a key file name nor kmip://GROUP/ID; ` +
        'for a segment Cassandra wrote, give its key store (--keystore)');
    }
    const [entry] = readKeyFile(path.join(config.systemKeyDirectory, alias));
    return entry.key;
  };
}
