/**
 * KMIP request and response messages as TTLV trees: typed builders for the operations this
 * package uses, and a reader that turns a response into results or a KmipError naming the
 * server's result reason and message. Sans-I/O: nothing here touches a socket.
 *
 * KMIP 1.x sends attributes as `Attribute { Attribute Name (text), Attribute Value }` inside a
 * `Template-Attribute`; KMIP 2.0 sends each attribute as its own tagged item inside
 * `Attributes`. Builders take a protocol version and produce the right form.
 */
import { TdeError } from '../errors';
import { enumNumber, TtlvItem, TtlvType } from './ttlv/codec';
import { ENUMS, TAGS } from './ttlv/registry';

export interface ProtocolVersion {
  major: number;
  minor: number;
}

export const KMIP_1_2: ProtocolVersion = { major: 1, minor: 2 };
export const KMIP_2_0: ProtocolVersion = { major: 2, minor: 0 };

export function versionString(v: ProtocolVersion): string {
  return `${v.major}.${v.minor}`;
}

// ---- tree helpers -------------------------------------------------------------------------

export const struct = (tag: string, ...children: (TtlvItem | undefined)[]): TtlvItem => ({
  tag,
  type: 'Structure',
  value: children.filter((c): c is TtlvItem => c !== undefined),
});
export const int = (tag: string, value: number): TtlvItem => ({ tag, type: 'Integer', value });
export const enumeration = (tag: string, value: string | number): TtlvItem => ({
  tag,
  type: 'Enumeration',
  value,
});
export const text = (tag: string, value: string): TtlvItem => ({ tag, type: 'TextString', value });
export const bytes = (tag: string, value: Buffer): TtlvItem => ({ tag, type: 'ByteString', value });
export const dateTime = (tag: string, value: Date): TtlvItem => ({
  tag,
  type: 'DateTime',
  value: BigInt(Math.floor(value.getTime() / 1000)),
});

/** Children of a structure with this tag (empty for a non-structure). */
export function children(item: TtlvItem | undefined, tag?: string): TtlvItem[] {
  if (!item || !Array.isArray(item.value)) return [];
  return tag === undefined ? item.value : item.value.filter((c) => c.tag === tag);
}

export function child(item: TtlvItem | undefined, tag: string): TtlvItem | undefined {
  return children(item, tag)[0];
}

// ---- attributes ---------------------------------------------------------------------------

/** An attribute in version-neutral form: its 2.0 tag name, type and value. */
export interface Attribute {
  name: string;
  type: TtlvType;
  value: TtlvItem['value'];
}

/**
 * KMIP 1.x spells attribute names as words: `CryptographicAlgorithm` is "Cryptographic Algorithm".
 */
export function attributeName1x(name: string): string {
  if (name.startsWith('x-') || name.startsWith('y-')) return name;
  return name.replace(/([a-z0-9])([A-Z])/g, '$1 $2');
}

export function attributeTag(name1x: string): string {
  if (name1x.startsWith('x-') || name1x.startsWith('y-')) return name1x;
  return name1x.replace(/[ -]/g, '');
}

export function nameAttribute(value: string): Attribute {
  return {
    name: 'Name',
    type: 'Structure',
    value: [text('NameValue', value), enumeration('NameType', 'UninterpretedTextString')],
  };
}

/** Attributes in the form `version` sends them: a Template-Attribute (1.x) or Attributes (2.0). */
export function attributesItem(
  version: ProtocolVersion,
  attrs: Attribute[],
  tag1x = 'TemplateAttribute',
): TtlvItem {
  if (version.major >= 2) {
    return struct(
      'Attributes',
      ...attrs.map((a) => ({ tag: a.name, type: a.type, value: a.value }) as TtlvItem),
    );
  }
  return struct(tag1x, ...attrs.map((a) => attribute1x(a)));
}

function attribute1x(a: Attribute): TtlvItem {
  // Under 1.x the value travels as `Attribute Value`, a tag with no enumeration of its own: an
  // enumeration given by name is turned into its number by the attribute's own table.
  const value =
    a.type === 'Enumeration' && typeof a.value === 'string' ? enumNumber(a.name, a.value) : a.value;
  return struct('Attribute', text('AttributeName', attributeName1x(a.name)), {
    tag: 'AttributeValue',
    type: a.type,
    value,
  } as TtlvItem);
}

/** An enumeration value as a name where the attribute's table knows it. */
function enumName(attribute: string, value: TtlvItem['value']): TtlvItem['value'] {
  if (typeof value !== 'number') return value;
  const table = ENUMS[attribute];
  return (table && Object.keys(table).find((k) => table[k] === value)) ?? value;
}

/** Reads attributes from a 1.x list of `Attribute` items or a 2.0 `Attributes` structure. */
export function readAttributes(container: TtlvItem | undefined): Attribute[] {
  if (!container) return [];
  const out: Attribute[] = [];
  for (const c of children(container)) {
    if (c.tag === 'Attribute') {
      const name = child(c, 'AttributeName');
      const value = child(c, 'AttributeValue');
      if (name && value && typeof name.value === 'string') {
        const tag = attributeTag(name.value);
        const v = value.type === 'Enumeration' ? enumName(tag, value.value) : value.value;
        out.push({ name: tag, type: value.type, value: v });
      }
    } else if (c.tag === 'Attributes') {
      out.push(...readAttributes(c));
    } else if (container.tag === 'Attributes' && typeof c.tag === 'string') {
      out.push({ name: c.tag, type: c.type, value: c.value });
    }
  }
  return out;
}

// ---- requests -----------------------------------------------------------------------------

export interface BatchRequest {
  operation: string;
  payload: TtlvItem[];
}

export function requestMessage(
  version: ProtocolVersion,
  batch: BatchRequest[],
  maxResponseSize?: number,
): TtlvItem {
  return struct(
    'RequestMessage',
    struct(
      'RequestHeader',
      struct(
        'ProtocolVersion',
        int('ProtocolVersionMajor', version.major),
        int('ProtocolVersionMinor', version.minor),
      ),
      maxResponseSize !== undefined ? int('MaximumResponseSize', maxResponseSize) : undefined,
      int('BatchCount', batch.length),
    ),
    ...batch.map((b) =>
      struct(
        'BatchItem',
        enumeration('Operation', b.operation),
        struct('RequestPayload', ...b.payload),
      ),
    ),
  );
}

const uid = (id: string) => text('UniqueIdentifier', id);

export const requests = {
  discoverVersions(versions: ProtocolVersion[]): BatchRequest {
    return {
      operation: 'DiscoverVersions',
      payload: versions.map((v) =>
        struct(
          'ProtocolVersion',
          int('ProtocolVersionMajor', v.major),
          int('ProtocolVersionMinor', v.minor),
        ),
      ),
    };
  },

  query(functions: string[]): BatchRequest {
    return { operation: 'Query', payload: functions.map((f) => enumeration('QueryFunction', f)) };
  },

  createSymmetricKey(
    version: ProtocolVersion,
    attrs: Attribute[],
    template?: string,
  ): BatchRequest {
    const attributes = attributesItem(version, attrs);
    if (template !== undefined) {
      if (version.major >= 2) {
        throw new TdeError(
          'ERR_TDE_UNSUPPORTED',
          'KMIP 2.0 has no templates: set kmip_version to 1.4 (or ' +
            'lower) for this group to create keys from a template',
        );
      }
      // A Template-Attribute names its templates first, as Name structures of its own.
      (attributes.value as TtlvItem[]).unshift(
        struct(
          'Name',
          text('NameValue', template),
          enumeration('NameType', 'UninterpretedTextString'),
        ),
      );
    }
    return {
      operation: 'Create',
      payload: [enumeration('ObjectType', 'SymmetricKey'), attributes],
    };
  },

  get(id: string): BatchRequest {
    return { operation: 'Get', payload: [uid(id), enumeration('KeyFormatType', 'Raw')] };
  },

  locate(version: ProtocolVersion, attrs: Attribute[], maximumItems?: number): BatchRequest {
    const payload: TtlvItem[] = [];
    if (maximumItems !== undefined) payload.push(int('MaximumItems', maximumItems));
    if (version.major >= 2) {
      payload.push(attributesItem(version, attrs));
    } else {
      payload.push(...attrs.map((a) => attribute1x(a)));
    }
    return { operation: 'Locate', payload };
  },

  activate(id: string): BatchRequest {
    return { operation: 'Activate', payload: [uid(id)] };
  },

  getAttributes(version: ProtocolVersion, id: string, names: string[] = []): BatchRequest {
    if (version.major >= 2) {
      // KMIP 2.0 names a standard attribute by its tag, as an Enumeration of the tag number.
      return {
        operation: 'GetAttributes',
        payload: [uid(id), ...names.map((n) => enumeration('AttributeReference', tagOf(n)))],
      };
    }
    return {
      operation: 'GetAttributes',
      payload: [uid(id), ...names.map((n) => text('AttributeName', attributeName1x(n)))],
    };
  },

  addAttribute(version: ProtocolVersion, id: string, a: Attribute): BatchRequest {
    if (version.major >= 2) {
      return {
        operation: 'AddAttribute',
        payload: [
          uid(id),
          struct('NewAttribute', { tag: a.name, type: a.type, value: a.value } as TtlvItem),
        ],
      };
    }
    return { operation: 'AddAttribute', payload: [uid(id), attribute1x(a)] };
  },

  modifyAttribute(version: ProtocolVersion, id: string, a: Attribute): BatchRequest {
    if (version.major >= 2) {
      return {
        operation: 'ModifyAttribute',
        payload: [
          uid(id),
          struct('NewAttribute', { tag: a.name, type: a.type, value: a.value } as TtlvItem),
        ],
      };
    }
    return { operation: 'ModifyAttribute', payload: [uid(id), attribute1x(a)] };
  },

  setAttribute(id: string, a: Attribute): BatchRequest {
    return {
      operation: 'SetAttribute',
      payload: [
        uid(id),
        struct('NewAttribute', { tag: a.name, type: a.type, value: a.value } as TtlvItem),
      ],
    };
  },

  revoke(id: string, reason: string, message?: string, compromiseDate?: Date): BatchRequest {
    return {
      operation: 'Revoke',
      payload: [
        uid(id),
        struct(
          'RevocationReason',
          enumeration('RevocationReasonCode', reason),
          message ? text('RevocationMessage', message) : undefined,
        ),
        ...(compromiseDate ? [dateTime('CompromiseOccurrenceDate', compromiseDate)] : []),
      ],
    };
  },

  destroy(id: string): BatchRequest {
    return { operation: 'Destroy', payload: [uid(id)] };
  },
};

/** The tag number of an attribute, as KMIP 2.0's Attribute Reference carries it. */
function tagOf(name: string): number {
  const n = TAGS[name];
  if (n === undefined)
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `unknown KMIP attribute ${name}`);
  return n;
}

// ---- responses ----------------------------------------------------------------------------

export interface BatchResult {
  operation?: string;
  status: string;
  reason?: string;
  message?: string;
  payload?: TtlvItem;
}

export interface Response {
  version: ProtocolVersion;
  timeStamp?: bigint;
  batch: BatchResult[];
}

/** A KMIP operation the server answered with a failure. */
export class KmipError extends TdeError {
  constructor(
    readonly operation: string,
    readonly reason: string | undefined,
    readonly resultMessage: string | undefined,
    context: string,
  ) {
    super(
      'ERR_TDE_KMIP_OPERATION',
      `KMIP ${operation} ${context}failed: ${reason ?? 'no reason given'}` +
        (resultMessage ? ` ("${resultMessage}")` : ''),
    );
  }
}

function malformed(what: string): TdeError {
  return new TdeError(
    'ERR_TDE_TTLV',
    `the KMIP server's response is not a valid response message: ${what}`,
  );
}

export function parseResponse(message: TtlvItem): Response {
  if (message.tag !== 'ResponseMessage') throw malformed(`it is a ${String(message.tag)}`);
  const header = child(message, 'ResponseHeader');
  const pv = child(header, 'ProtocolVersion');
  const major = child(pv, 'ProtocolVersionMajor')?.value;
  const minor = child(pv, 'ProtocolVersionMinor')?.value;
  if (typeof major !== 'number' || typeof minor !== 'number')
    throw malformed('no protocol version in its header');
  const ts = child(header, 'TimeStamp')?.value;

  const batch = children(message, 'BatchItem').map((item) => {
    const status = child(item, 'ResultStatus')?.value;
    if (status === undefined) throw malformed('a batch item has no result status');
    const op = child(item, 'Operation')?.value;
    const reason = child(item, 'ResultReason')?.value;
    const text = child(item, 'ResultMessage')?.value;
    return {
      operation: op === undefined ? undefined : String(op),
      status: String(status),
      reason: reason === undefined ? undefined : String(reason),
      message: typeof text === 'string' ? text : undefined,
      payload: child(item, 'ResponsePayload'),
    } satisfies BatchResult;
  });
  return { version: { major, minor }, timeStamp: typeof ts === 'bigint' ? ts : undefined, batch };
}

/** The payload of a successful single-item response, or a KmipError. */
export function expectSuccess(response: Response, operation: string, context = ''): TtlvItem {
  const item = response.batch[0];
  if (!item) throw malformed(`no batch item in the answer to ${operation}`);
  if (item.status !== 'Success') throw new KmipError(operation, item.reason, item.message, context);
  return item.payload ?? struct('ResponsePayload');
}
