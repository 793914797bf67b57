/**
 * KMIP's TTLV encoding: every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and
 * the value, zero-padded to a multiple of 8 bytes. Structures hold further items.
 *
 * This module turns bytes into a tree and back and never touches a socket. The decoder trusts no
 * length: each is checked against the bytes actually present before anything is read or
 * allocated, nesting is bounded, and fixed-size types must have their fixed size. Tags and
 * enumeration values it does not know (vendor extensions) are kept as numbers, not rejected.
 */
import { TdeError } from '../../errors';
import { ENUMS, TAGS } from './registry';

export type TtlvType =
  | 'Structure'
  | 'Integer'
  | 'LongInteger'
  | 'BigInteger'
  | 'Enumeration'
  | 'Boolean'
  | 'TextString'
  | 'ByteString'
  | 'DateTime'
  | 'Interval'
  | 'DateTimeExtended';

/**
 * One TTLV item. `tag` is the KMIP name (`UniqueIdentifier`) or, for tags this package does not
 * know, the number. Values by type:
 * - Structure: the child items;
 * - Integer, Interval: number; LongInteger, BigInteger, DateTime (seconds), DateTimeExtended
 *   (microseconds): bigint;
 * - Enumeration: the value's KMIP name where known, else its number;
 * - Boolean: boolean; TextString: string; ByteString: Buffer.
 */
export interface TtlvItem {
  tag: string | number;
  type: TtlvType;
  value: TtlvItem[] | number | bigint | boolean | string | Buffer;
}

const TYPE_CODES: Record<TtlvType, number> = {
  Structure: 0x01,
  Integer: 0x02,
  LongInteger: 0x03,
  BigInteger: 0x04,
  Enumeration: 0x05,
  Boolean: 0x06,
  TextString: 0x07,
  ByteString: 0x08,
  DateTime: 0x09,
  Interval: 0x0a,
  DateTimeExtended: 0x0b,
};
const TYPE_NAMES = new Map(
  Object.entries(TYPE_CODES).map(([name, code]) => [code, name as TtlvType]),
);

/** Lengths the fixed-size types must declare. */
const FIXED_LENGTH: Partial<Record<TtlvType, number>> = {
  Integer: 4,
  Enumeration: 4,
  Interval: 4,
  LongInteger: 8,
  Boolean: 8,
  DateTime: 8,
  DateTimeExtended: 8,
};

/** Deeper nesting than any KMIP message needs; a hostile message cannot exhaust the stack. */
export const MAX_DEPTH = 32;

const TAG_NAMES = new Map(Object.entries(TAGS).map(([name, n]) => [n, name]));
const ENUM_NAMES = new Map(
  Object.entries(ENUMS).map(([tag, values]) => [
    tag,
    new Map(Object.entries(values).map(([k, v]) => [v, k])),
  ]),
);

export class TtlvError extends TdeError {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super('ERR_TDE_TTLV', `malformed KMIP message at byte ${at}: ${message}`, { offset: at });
  }
}

const padded = (n: number) => Math.ceil(n / 8) * 8;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function tagNumber(tag: string | number): number {
  if (typeof tag === 'number') return tag;
  const n = TAGS[tag];
  if (n === undefined)
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `unknown KMIP tag name "${tag}"`);
  return n;
}

export function tagName(tag: number): string | number {
  return TAG_NAMES.get(tag) ?? tag;
}

/** The numeric value of an enumeration item, whether given by name or number. */
export function enumNumber(tag: string | number, value: string | number): number {
  if (typeof value === 'number') return value;
  const n = typeof tag === 'string' ? ENUMS[tag]?.[value] : undefined;
  if (n === undefined) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `unknown value "${value}" for KMIP enumeration ${tag}`,
    );
  }
  return n;
}

function decodeAt(
  buf: Buffer,
  at: number,
  end: number,
  depth: number,
): { item: TtlvItem; next: number } {
  if (depth > MAX_DEPTH) throw new TtlvError(`structures nested deeper than ${MAX_DEPTH}`, at);
  if (end - at < 8) throw new TtlvError(`an item needs 8 header bytes, ${end - at} remain`, at);

  const tagNum = buf.readUIntBE(at, 3);
  const typeCode = buf[at + 3];
  const length = buf.readUInt32BE(at + 4);
  const type = TYPE_NAMES.get(typeCode);
  if (!type)
    throw new TtlvError(`unknown item type 0x${typeCode.toString(16).padStart(2, '0')}`, at + 3);
  const start = at + 8;
  const total = type === 'Structure' ? length : padded(length);
  if (total > end - start) {
    throw new TtlvError(`item declares ${length} bytes but only ${end - start} remain`, at + 4);
  }
  const fixed = FIXED_LENGTH[type];
  if (fixed !== undefined && length !== fixed) {
    throw new TtlvError(`a ${type} must be ${fixed} bytes long, not ${length}`, at + 4);
  }
  for (let i = start + length; i < start + total; i++) {
    if (buf[i] !== 0) throw new TtlvError('padding bytes are not zero', i);
  }

  const tag = tagName(tagNum);
  let value: TtlvItem['value'];
  switch (type) {
    case 'Structure': {
      if (length % 8 !== 0)
        throw new TtlvError(`a structure's length must be a multiple of 8, not ${length}`, at + 4);
      const children: TtlvItem[] = [];
      let p = start;
      while (p < start + length) {
        const r = decodeAt(buf, p, start + length, depth + 1);
        children.push(r.item);
        p = r.next;
      }
      value = children;
      break;
    }
    case 'Integer':
      value = buf.readInt32BE(start);
      break;
    case 'Interval':
      value = buf.readUInt32BE(start);
      break;
    case 'Enumeration': {
      const n = buf.readUInt32BE(start);
      value = (typeof tag === 'string' && ENUM_NAMES.get(tag)?.get(n)) || n;
      break;
    }
    case 'LongInteger':
    case 'DateTime':
    case 'DateTimeExtended':
      value = buf.readBigInt64BE(start);
      break;
    case 'BigInteger': {
      if (length % 8 !== 0)
        throw new TtlvError(
          `a Big Integer's length must be a multiple of 8, not ${length}`,
          at + 4,
        );
      value =
        length === 0
          ? 0n
          : BigInt.asIntN(length * 8, BigInt('0x' + buf.toString('hex', start, start + length)));
      break;
    }
    case 'Boolean': {
      const v = buf.readBigUInt64BE(start);
      if (v > 1n) throw new TtlvError(`a Boolean must be 0 or 1, not ${v}`, start);
      value = v === 1n;
      break;
    }
    case 'TextString':
      try {
        value = utf8.decode(buf.subarray(start, start + length));
      } catch {
        throw new TtlvError('a Text String is not valid UTF-8', start);
      }
      break;
    case 'ByteString':
      value = Buffer.from(buf.subarray(start, start + length));
      break;
  }
  return { item: { tag, type, value }, next: start + total };
}

/** Decodes exactly one TTLV item filling `bytes`; any error is a TtlvError with the offset. */
export function decode(bytes: Uint8Array): TtlvItem {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { item, next } = decodeAt(buf, 0, buf.length, 0);
  if (next !== buf.length) throw new TtlvError(`${buf.length - next} bytes follow the item`, next);
  return item;
}

/** Bytes of a Big Integer: two's complement, sign-extended to a multiple of 8 bytes. */
function bigIntegerBytes(v: bigint): Buffer {
  let bytes = 8;
  while (BigInt.asIntN(bytes * 8, v) !== v) bytes += 8;
  const hex = BigInt.asUintN(bytes * 8, v)
    .toString(16)
    .padStart(bytes * 2, '0');
  return Buffer.from(hex, 'hex');
}

function valueBytes(item: TtlvItem, depth: number): Buffer {
  const v = item.value;
  const fail = (what: string): never => {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `cannot encode ${String(item.tag)} (${item.type}): ${what}`,
    );
  };
  switch (item.type) {
    case 'Structure': {
      if (!Array.isArray(v)) return fail('value must be an array of items');
      if (depth >= MAX_DEPTH) return fail(`nested deeper than ${MAX_DEPTH}`);
      return Buffer.concat(v.map((child) => encodeItem(child, depth + 1)));
    }
    case 'Integer': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff)
        return fail('not a 32-bit integer');
      const b = Buffer.alloc(4);
      b.writeInt32BE(v);
      return b;
    }
    case 'Interval': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
        return fail('not an unsigned 32-bit integer');
      const b = Buffer.alloc(4);
      b.writeUInt32BE(v);
      return b;
    }
    case 'Enumeration': {
      if (typeof v !== 'number' && typeof v !== 'string')
        return fail('value must be a name or a number');
      const n = enumNumber(item.tag, v);
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
        return fail('not an unsigned 32-bit value');
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    }
    case 'LongInteger':
    case 'DateTime':
    case 'DateTimeExtended': {
      if (typeof v !== 'bigint' || BigInt.asIntN(64, v) !== v)
        return fail('value must be a 64-bit bigint');
      const b = Buffer.alloc(8);
      b.writeBigInt64BE(v);
      return b;
    }
    case 'BigInteger':
      if (typeof v !== 'bigint') return fail('value must be a bigint');
      return bigIntegerBytes(v);
    case 'Boolean': {
      if (typeof v !== 'boolean') return fail('value must be a boolean');
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(v ? 1n : 0n);
      return b;
    }
    case 'TextString':
      if (typeof v !== 'string') return fail('value must be a string');
      return Buffer.from(v, 'utf8');
    case 'ByteString':
      if (!(v instanceof Uint8Array)) return fail('value must be a Buffer');
      return Buffer.from(v);
    default:
      return fail('unknown type');
  }
}

function encodeItem(item: TtlvItem, depth: number): Buffer {
  const type = TYPE_CODES[item.type];
  if (type === undefined) {
    throw new TdeError('ERR_TDE_INVALID_ARGUMENT', `unknown TTLV type "${String(item.type)}"`);
  }
  const body = valueBytes(item, depth);
  const out = Buffer.alloc(8 + padded(body.length));
  out.writeUIntBE(tagNumber(item.tag), 0, 3);
  out[3] = type;
  out.writeUInt32BE(body.length, 4);
  body.copy(out, 8);
  return out;
}

/** Encodes one item (and its children). */
export function encode(item: TtlvItem): Buffer {
  return encodeItem(item, 0);
}
