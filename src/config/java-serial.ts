/**
 * Just enough of Java's object serialization stream format to read what a JCEKS key store puts
 * in it: objects with primitive, string, byte-array and object fields. Anything else (proxies,
 * exotic array types, externalizable data) is refused with a coded error, and every length and
 * nesting level is checked against the bytes present before it is used.
 */
import { TdeError } from '../errors';

export interface JavaObject {
  className: string;
  fields: Record<string, unknown>;
}

const STREAM_MAGIC = 0xaced;
const TC_NULL = 0x70;
const TC_REFERENCE = 0x71;
const TC_CLASSDESC = 0x72;
const TC_OBJECT = 0x73;
const TC_STRING = 0x74;
const TC_ARRAY = 0x75;
const TC_BLOCKDATA = 0x77;
const TC_ENDBLOCKDATA = 0x78;
const TC_LONGSTRING = 0x7c;
const TC_ENUM = 0x7e;
const BASE_HANDLE = 0x7e0000;
const SC_WRITE_METHOD = 0x01;
const SC_SERIALIZABLE = 0x02;
const MAX_DEPTH = 32;

interface FieldDesc {
  type: string;
  name: string;
}

interface ClassDesc {
  name: string;
  flags: number;
  fields: FieldDesc[];
  parent?: ClassDesc;
}

export class JavaStreamReader {
  private at = 0;
  private readonly handles: unknown[] = [];

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  get offset(): number {
    return this.at;
  }

  private fail(message: string): never {
    throw new TdeError(
      'ERR_TDE_CONFIG',
      `${this.what} is damaged or not a Java key store entry: ${message} ` + `(at byte ${this.at})`,
    );
  }

  private need(n: number): void {
    if (n < 0 || this.buf.length - this.at < n)
      this.fail(`it ends ${n - (this.buf.length - this.at)} bytes early`);
  }

  u8(): number {
    this.need(1);
    return this.buf[this.at++];
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.at);
    this.at += 4;
    return v;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }

  /** Java's modified UTF-8 with a 16-bit length; the ASCII that key stores hold reads the same. */
  utf(): string {
    return this.bytes(this.u16()).toString('utf8');
  }

  /** The stream header, then one object. */
  readStream(): unknown {
    if (this.u16() !== STREAM_MAGIC) this.fail('no serialization stream header');
    this.u16(); // stream version
    return this.readContent(0);
  }

  private assign<T>(value: T): T {
    this.handles.push(value);
    return value;
  }

  private readContent(depth: number): unknown {
    if (depth > MAX_DEPTH) this.fail(`objects nested deeper than ${MAX_DEPTH}`);
    const tc = this.u8();
    switch (tc) {
      case TC_NULL:
        return null;
      case TC_REFERENCE: {
        const h = this.i32() - BASE_HANDLE;
        if (h < 0 || h >= this.handles.length) this.fail(`reference to unknown handle ${h}`);
        return this.handles[h];
      }
      case TC_STRING:
        return this.assign(this.utf());
      case TC_LONGSTRING: {
        const high = this.i32();
        const low = this.i32();
        if (high !== 0 || low < 0) this.fail('string too long');
        return this.assign(this.bytes(low).toString('utf8'));
      }
      case TC_CLASSDESC:
        return this.readClassDescBody(depth);
      case TC_OBJECT:
        return this.readObject(depth);
      case TC_ARRAY:
        return this.readArray(depth);
      case TC_ENUM: {
        const desc = this.readClassDesc(depth + 1);
        const holder: JavaObject = { className: desc?.name ?? '?', fields: {} };
        this.assign(holder);
        holder.fields.name = this.readContent(depth + 1);
        return holder;
      }
      default:
        return this.fail(`unsupported stream element 0x${tc.toString(16)}`);
    }
  }

  private readClassDesc(depth: number): ClassDesc | undefined {
    const v = this.readContent(depth);
    if (v === null) return undefined;
    if (typeof v !== 'object' || !('flags' in (v as object)))
      this.fail('expected a class description');
    return v as ClassDesc;
  }

  private readClassDescBody(depth: number): ClassDesc {
    const desc: ClassDesc = { name: this.utf(), flags: 0, fields: [] };
    this.bytes(8); // serialVersionUID
    // The handle is taken before the field type strings are read, as Java numbers them.
    this.assign(desc);
    desc.flags = this.u8();
    const n = this.u16();
    for (let i = 0; i < n; i++) {
      const type = String.fromCharCode(this.u8());
      const name = this.utf();
      if (type === '[' || type === 'L') {
        const className = this.readContent(depth + 1);
        if (typeof className !== 'string') this.fail(`field ${name} has no type name`);
        desc.fields.push({ type: className as string, name });
      } else {
        desc.fields.push({ type, name });
      }
    }
    this.skipAnnotation(depth);
    desc.parent = this.readClassDesc(depth + 1);
    return desc;
  }

  private skipAnnotation(depth: number): void {
    for (;;) {
      const tc = this.buf[this.at];
      if (tc === TC_ENDBLOCKDATA) {
        this.at++;
        return;
      }
      if (tc === TC_BLOCKDATA) {
        this.at++;
        this.bytes(this.u8());
      } else {
        this.readContent(depth + 1);
      }
    }
  }

  private readObject(depth: number): JavaObject {
    const desc = this.readClassDesc(depth + 1);
    if (!desc) this.fail('an object without a class');
    const obj: JavaObject = { className: desc.name, fields: {} };
    this.assign(obj);
    const chain: ClassDesc[] = [];
    for (let d: ClassDesc | undefined = desc; d; d = d.parent) chain.unshift(d);
    for (const d of chain) {
      if ((d.flags & SC_SERIALIZABLE) === 0)
        this.fail(`class ${d.name} is not plainly serializable`);
      for (const f of d.fields) obj.fields[f.name] = this.readField(f, depth);
      if (d.flags & SC_WRITE_METHOD) this.skipAnnotation(depth);
    }
    return obj;
  }

  private readField(f: FieldDesc, depth: number): unknown {
    switch (f.type) {
      case 'B':
        return this.bytes(1).readInt8(0);
      case 'Z':
        return this.u8() !== 0;
      case 'C':
      case 'S':
        return this.u16();
      case 'I':
      case 'F':
        return this.i32();
      case 'J':
      case 'D':
        return this.bytes(8).readBigInt64BE(0);
      default:
        return this.readContent(depth + 1);
    }
  }

  private readArray(depth: number): unknown {
    const desc = this.readClassDesc(depth + 1);
    if (!desc) this.fail('an array without a class');
    const holder: { value?: unknown } = {};
    const index = this.handles.length;
    this.assign(holder);
    const length = this.i32();
    if (length < 0) this.fail(`negative array length ${length}`);
    if (desc.name !== '[B') this.fail(`unsupported array type ${desc.name}`);
    const value = Buffer.from(this.bytes(length));
    this.handles[index] = value;
    return value;
  }
}
