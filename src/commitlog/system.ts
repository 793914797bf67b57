/**
 * `system_info_encryption`: the key, and writers, for the commit log and hints of a storage
 * process, and the table options that encrypt the system.batchlog and system.paxos tables.
 */
import { resolveCipher } from '../cipher/transformation';
import { EncryptionSettings } from '../compression/options';
import { SystemInfoEncryption, TdeConfig } from '../config/config';
import { TdeError } from '../errors';
import { KeyProviders } from '../keys/provider';
import { HintsFileNames, HintsWriter } from './hints';
import { SegmentEncryption, SegmentWriter } from './segment';

/** The system tables system_info_encryption covers. */
export const SYSTEM_TABLES = ['batchlog', 'paxos'];

function enabled(config: TdeConfig): SystemInfoEncryption {
  const s = config.systemInfoEncryption;
  if (!s?.enabled) {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `system_info_encryption is not enabled in ${config.file ?? 'the configuration'}; ` +
        'set system_info_encryption.enabled: true (with cipher_algorithm, secret_key_strength ' +
        'and key_provider)',
    );
  }
  return s;
}

function settingsOf(s: SystemInfoEncryption): EncryptionSettings {
  return {
    cipherAlgorithm: s.cipherAlgorithm,
    strength: s.strength,
    keyProvider: s.keyProvider,
    kmipHost: s.kmipHost,
    keyNamespace: s.keyNamespace,
    systemKeyFile:
      s.keyProvider === 'LocalFileSystemKeyProviderFactory'
        ? (s.systemKeyFile ?? 'system_key')
        : undefined,
  };
}

/**
 * The key system resources are encrypted with. KMIP keys are never created here: as in DSE, only
 * an existing key of the configured cipher and strength is used, and its absence stops start-up.
 */
export async function systemInfoKey(
  config: TdeConfig,
  keys: KeyProviders,
): Promise<SegmentEncryption> {
  const s = enabled(config);
  const choice = resolveCipher(s.cipherAlgorithm, s.strength);
  const key = await keys.keyFor(settingsOf(s), choice, { create: false });
  const alias =
    key.record?.kmip_key_id !== undefined
      ? `kmip://${s.kmipHost}/${key.record.kmip_key_id}`
      : key.id;
  return { transformation: choice.name, key: key.bytes, keyAlias: alias };
}

/** A new commit log segment encrypted as system_info_encryption says. */
export async function openCommitLogSegment(
  config: TdeConfig,
  keys: KeyProviders,
  file: string,
  id: bigint,
): Promise<SegmentWriter> {
  const encryption = await systemInfoKey(config, keys);
  try {
    return await SegmentWriter.create({
      file,
      id,
      encryption,
      blockLength: enabled(config).chunkLength,
    });
  } finally {
    (encryption.key as Buffer).fill(0);
  }
}

/** A new hints file encrypted as system_info_encryption says. */
export async function openHintsFile(
  config: TdeConfig,
  keys: KeyProviders,
  names: HintsFileNames,
  descriptor: { hostId: string; timestamp: number },
): Promise<HintsWriter> {
  const encryption = await systemInfoKey(config, keys);
  try {
    return await HintsWriter.create(names, descriptor, encryption, enabled(config).chunkLength);
  } finally {
    (encryption.key as Buffer).fill(0);
  }
}

/** Table compression options that encrypt a system table as system_info_encryption says. */
export function systemTableCompression(s: SystemInfoEncryption): Record<string, string> {
  const out: Record<string, string> = {
    class: 'EncryptingLZ4Compressor',
    cipher_algorithm: s.cipherAlgorithm,
    secret_key_strength: String(s.strength),
    key_provider: s.keyProvider,
    chunk_length_kb: String(s.chunkLength / 1024),
  };
  if (s.kmipHost) out.kmip_host = s.kmipHost;
  if (s.keyNamespace) out.key_namespace = s.keyNamespace;
  if (s.keyProvider === 'LocalFileSystemKeyProviderFactory')
    out.system_key_file = s.systemKeyFile ?? 'system_key';
  return out;
}
