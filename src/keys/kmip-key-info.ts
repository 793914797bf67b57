/**
 * The sstable-tde entry on KMIP keys this package creates: an Application Specific Information
 * attribute (namespace `sstable-tde`) of `key=value;...` pairs: the cipher the key was made for,
 * and room for an expiry on servers that keep no Protect Stop Date (see kmip-admin.ts).
 */
import { CipherChoice } from '../cipher/transformation';
import { Attribute, text } from '../kmip/messages';

export const TDE_APP_NAMESPACE = 'sstable-tde';

/** The `key=value` pairs of a key's sstable-tde entry. */
export function tdeInfo(attrs: Attribute[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of attrs) {
    if (a.name !== 'ApplicationSpecificInformation' || !Array.isArray(a.value)) continue;
    const ns = a.value.find((c) => c.tag === 'ApplicationNamespace')?.value;
    const data = a.value.find((c) => c.tag === 'ApplicationData')?.value;
    if (ns !== TDE_APP_NAMESPACE || typeof data !== 'string') continue;
    for (const pair of data.split(';')) {
      const at = pair.indexOf('=');
      if (at > 0) out[pair.slice(0, at)] = pair.slice(at + 1);
    }
  }
  return out;
}

function formatInfo(info: Record<string, string>): string {
  return Object.entries(info)
    .map(([k, v]) => `${k}=${v}`)
    .join(';');
}

export function infoAttribute(info: Record<string, string>): Attribute {
  return {
    name: 'ApplicationSpecificInformation',
    type: 'Structure',
    value: [
      text('ApplicationNamespace', TDE_APP_NAMESPACE),
      text('ApplicationData', formatInfo(info)),
    ],
  };
}

/** Attributes for a key sstable-tde creates: its cipher, and room for an expiry. */
export function newKeyAttributes(choice: CipherChoice, namespace?: string): Attribute[] {
  const attrs: Attribute[] = [
    infoAttribute({
      cipher: choice.name,
      strength: String(choice.strength),
      'protect-stop-date': 'none',
    }),
  ];
  if (namespace !== undefined)
    attrs.push({ name: 'ObjectGroup', type: 'TextString', value: namespace });
  return attrs;
}
