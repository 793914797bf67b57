/**
 * Key administration on a KMIP server, as `dsetool createsystemkey -k` and `dsetool managekmip`
 * do it: create, list, expire, revoke and destroy keys.
 *
 * Keys made by sstable-tde carry an Application Specific Information entry (namespace
 * `sstable-tde`) holding `key=value` pairs: the cipher the key was made for and, for servers that
 * keep no Protect Stop Date (PyKMIP 0.10 is one), the expiry set by `expirekey`. The standard
 * attribute is always tried first; the entry is only a fallback, and key choice honours both.
 */
import { CipherChoice, resolveCipher } from '../cipher/transformation';
import { TdeError } from '../errors';
import { KmipClient, KmipError } from '../kmip/client';
import { Attribute, int, struct, text } from '../kmip/messages';
import { TtlvItem } from '../kmip/ttlv/codec';
import { infoAttribute, newKeyAttributes, tdeInfo } from './kmip-key-info';
import { kmipKeySpec, keyStateOf, KeyState } from './kmip-provider';

/** Creates and activates a key for a cipher; returns its id. */
export async function createKmipKey(
  client: KmipClient,
  choice: CipherChoice,
  options: {
    namespace?: string;
    template?: string;
    name?: string;
  } = {},
): Promise<string> {
  const spec = kmipKeySpec(choice);
  const id = await client.createSymmetricKey({
    algorithm: spec.algorithm,
    length: spec.length,
    name:
      options.name ??
      `sstable-tde ${options.namespace ? `${options.namespace} ` : ''}${choice.name} ` +
        `${choice.strength} ${new Date().toISOString()}`,
    attributes: newKeyAttributes(choice, options.namespace),
    template: options.template,
  });
  await client.activate(id);
  return id;
}

export interface KeyRow extends KeyState {
  algorithm?: string;
  length?: number;
  cipher?: string;
  activationDate?: bigint;
}

/** Every key the client may see, with the attributes `managekmip list` shows. */
export async function listKeys(client: KmipClient): Promise<KeyRow[]> {
  const ids = await client.locate([
    { name: 'ObjectType', type: 'Enumeration', value: 'SymmetricKey' },
  ]);
  const rows: KeyRow[] = [];
  for (const id of ids) {
    const attrs = await client.getAttributes(id);
    const state = keyStateOf(id, attrs);
    const info = tdeInfo(attrs);
    const get = (n: string) => attrs.find((a) => a.name === n)?.value;
    rows.push({
      ...state,
      algorithm:
        get('CryptographicAlgorithm') === undefined
          ? undefined
          : String(get('CryptographicAlgorithm')),
      length:
        typeof get('CryptographicLength') === 'number'
          ? (get('CryptographicLength') as number)
          : undefined,
      cipher: info.cipher,
      activationDate:
        typeof get('ActivationDate') === 'bigint' ? (get('ActivationDate') as bigint) : undefined,
    });
  }
  return rows.sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }));
}

/** Reasons a server gives when it does not keep an attribute. */
const UNKEPT = [
  'InvalidField',
  'InvalidMessage',
  'OperationNotSupported',
  'AttributeNotFound',
  'AttributeNotSupported',
  'FeatureNotSupported',
];

/**
 * Sets a key's Protect Stop Date: it then encrypts nothing new after `when` (and keeps
 * decrypting). Returns how it was recorded.
 */
export async function expireKey(
  client: KmipClient,
  id: string,
  when: Date,
): Promise<'Protect Stop Date' | 'sstable-tde application data'> {
  const seconds = BigInt(Math.floor(when.getTime() / 1000));
  const psd: Attribute = { name: 'ProtectStopDate', type: 'DateTime', value: seconds };
  const attrs = await client.getAttributes(id);
  const v = client.version ?? { major: 1, minor: 2 };
  try {
    if (v.major >= 2)
      await client.call(
        () => ({
          operation: 'SetAttribute',
          payload: [
            text('UniqueIdentifier', id),
            struct('NewAttribute', { tag: 'ProtectStopDate', type: 'DateTime', value: seconds }),
          ],
        }),
        `set the Protect Stop Date of key ${id}`,
      );
    else if (attrs.some((a) => a.name === 'ProtectStopDate')) await client.modifyAttribute(id, psd);
    else await client.addAttribute(id, psd);
    return 'Protect Stop Date';
  } catch (err) {
    if (!(err instanceof KmipError) || !UNKEPT.includes(err.reason ?? '')) throw err;
    const info = tdeInfo(attrs);
    if (!('protect-stop-date' in info)) {
      throw new TdeError(
        'ERR_TDE_KMIP_OPERATION',
        `the KMIP server does not keep a Protect Stop Date for key ${id} ` +
          `(${err.reason}${err.resultMessage ? `: ${err.resultMessage}` : ''}), and the key was ` +
          `not made by ` +
          'sstable-tde, so there is nowhere else to record it; revoke the key instead to stop ' +
          'its use',
        {},
        err,
      );
    }
    await replaceInfo(client, id, info, { ...info, 'protect-stop-date': String(seconds) });
    return 'sstable-tde application data';
  }
}

async function replaceInfo(
  client: KmipClient,
  id: string,
  current: Record<string, string>,
  next: Record<string, string>,
): Promise<void> {
  const v = client.version ?? { major: 1, minor: 2 };
  const value = infoAttribute(next).value as TtlvItem[];
  if (v.major >= 2) {
    await client.call(
      () => ({
        operation: 'ModifyAttribute',
        payload: [
          text('UniqueIdentifier', id),
          struct('CurrentAttribute', {
            tag: 'ApplicationSpecificInformation',
            type: 'Structure',
            value: infoAttribute(current).value as TtlvItem[],
          }),
          struct('NewAttribute', {
            tag: 'ApplicationSpecificInformation',
            type: 'Structure',
            value,
          }),
        ],
      }),
      `record the expiry of key ${id}`,
    );
    return;
  }
  await client.call(
    () => ({
      operation: 'ModifyAttribute',
      payload: [
        text('UniqueIdentifier', id),
        struct(
          'Attribute',
          text('AttributeName', 'Application Specific Information'),
          int('AttributeIndex', 0),
          { tag: 'AttributeValue', type: 'Structure', value },
        ),
      ],
    }),
    `record the expiry of key ${id}`,
  );
}

/** States in which a key can no longer encrypt, so destroying it cannot cut off new writes. */
const REVOKED_STATES = ['Deactivated', 'Compromised'];

export async function keyState(client: KmipClient, id: string): Promise<string | undefined> {
  const attrs = await client.getAttributes(id, ['State']);
  return keyStateOf(id, attrs).state;
}

export function revokedState(state: string | undefined): boolean {
  return REVOKED_STATES.includes(state ?? '');
}

/** The transformation a KMIP key was made for, from its sstable-tde entry or its algorithm. */
export async function kmipKeyCipher(client: KmipClient, id: string): Promise<CipherChoice> {
  return kmipKeyCipherOf(id, await client.getAttributes(id));
}

/** {@link kmipKeyCipher} from attributes already fetched. */
export function kmipKeyCipherOf(id: string, attrs: Attribute[]): CipherChoice {
  const info = tdeInfo(attrs);
  const algorithm = attrs.find((a) => a.name === 'CryptographicAlgorithm')?.value;
  const length = attrs.find((a) => a.name === 'CryptographicLength')?.value;
  if (info.cipher && info.strength) return resolveCipher(info.cipher, info.strength);
  if (algorithm === 'AES' && typeof length === 'number')
    return resolveCipher('AES/ECB/PKCS5Padding', length);
  throw new TdeError(
    'ERR_TDE_KMIP_OPERATION',
    `KMIP key ${id} is a ${String(algorithm)} key of ${String(length)} bits ` +
      'without a cipher recorded by sstable-tde; make the system key with "sstable-tde ' +
      'createsystemkey ... -k GROUP"',
  );
}
