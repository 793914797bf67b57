/**
 * The TTLV codec: every corpus vector round-trips byte for byte; hostile bytes give typed errors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';
import fc from 'fast-check';

import { ttlv } from '../src/index';
import { MAX_DEPTH, TtlvItem } from '../src/kmip/ttlv/codec';
import { FIXTURES } from './helpers';

interface Vector {
  name: string;
  hex: string;
  notes: string;
}
const vectors: Vector[] = JSON.parse(
  fs.readFileSync(path.join(FIXTURES, 'kmip-ttlv-vectors.json'), 'utf8'),
);
const hex = (h: string) => Buffer.from(h, 'hex');

/** Every tag and enumeration name in a tree, in order. */
function names(item: TtlvItem): string[] {
  const out = [String(item.tag)];
  if (Array.isArray(item.value)) for (const c of item.value) out.push(...names(c));
  else if (item.type === 'Enumeration') out.push(String(item.value));
  return out;
}

test('every corpus vector decodes and encodes back to the same bytes', (t) => {
  t.is(vectors.length, 26);
  for (const v of vectors) {
    const tree = ttlv.decode(hex(v.hex));
    t.is(ttlv.encode(tree).toString('hex').toUpperCase(), v.hex, v.name);
  }
});

test("decoded trees name tags and enumerations as the vectors' notes do", (t) => {
  for (const v of vectors) {
    const decoded = /^Decoded: (.*?)(?: – |$)/s.exec(v.notes)?.[1] ?? '';
    const words = new Set(decoded.match(/[A-Za-z][A-Za-z0-9]*/g) ?? []);
    const ours = names(ttlv.decode(hex(v.hex))).filter((n) => !/^\d+$/.test(n));
    // Each name we give that the note also uses must be spelt the same; and the note's
    // structure names must all appear in our tree.
    const structures = [...decoded.matchAll(/(?:^|\(|, )([A-Z][A-Za-z0-9]*)\(/g)].map((m) => m[1]);
    for (const s of structures)
      t.true(ours.includes(s), `${v.name}: ${s} not in ${ours.join(' ')}`);
    t.true(
      ours.some((n) => words.has(n)),
      v.name,
    );
  }
});

test('a Create request reads as KMIP names, with values of the right types', (t) => {
  const v = vectors.find((x) => x.name === 'create-request-aes128-tc3.1.1')!;
  const tree = ttlv.decode(hex(v.hex));
  t.is(tree.tag, 'RequestMessage');
  const flat = JSON.stringify(tree, (_, x) => (typeof x === 'bigint' ? x.toString() : x));
  t.regex(flat, /"tag":"Operation","type":"Enumeration","value":"Create"/);
  t.regex(flat, /"tag":"ObjectType","type":"Enumeration","value":"SymmetricKey"/);
  t.regex(flat, /"tag":"AttributeName","type":"TextString","value":"Cryptographic Algorithm"/);
});

test("the specification's primitive examples decode to their documented values", (t) => {
  const cases: [string, unknown][] = [
    ['42002002000000040000000800000000', 8],
    ['420020030000000801B69B4BA5749200', 123456789000000000n],
    ['42002004000000100000000003FD35EB6BC2DF4618080000', 1234567890000000000000000000n],
    ['4200200500000004000000FF00000000', 255],
    ['42002006000000080000000000000001', true],
    ['420020070000000B48656C6C6F20576F726C640000000000', 'Hello World'],
    ['42002008000000030102030000000000', Buffer.from([1, 2, 3])],
    ['42002009000000080000000047DA67F8', 1205495800n],
    ['4200200A00000004000D2F0000000000', 864000],
  ];
  for (const [h, value] of cases) {
    const item = ttlv.decode(hex(h));
    t.is(item.tag, 'CompromiseDate');
    t.deepEqual(item.value, value, h);
    t.is(ttlv.encode(item).toString('hex').toUpperCase(), h.toUpperCase());
  }
});

test(
  'vendor-extension tags and unknown enumeration ' + 'values are kept as numbers, not rejected',
  (t) => {
    const item: TtlvItem = {
      tag: 0x540001,
      type: 'Structure',
      value: [
        { tag: 0x540002, type: 'TextString', value: 'x-vendor' },
        { tag: 'Operation', type: 'Enumeration', value: 0x8000000a },
      ],
    };
    const bytes = ttlv.encode(item);
    t.deepEqual(ttlv.decode(bytes), item);
  },
);

test(
  'hostile bytes give ERR_TDE_TTLV with the ' + 'offset, never a crash or a large allocation',
  (t) => {
    const bad: [string, RegExp][] = [
      ['42007801', /8 header bytes/],
      ['420078010000FFF0', /declares 65520 bytes but only 0 remain/],
      ['42002002000000080000000800000000', /must be 4 bytes long/],
      ['420020FF0000000400000000', /unknown item type 0xff/],
      ['42002006000000080000000000000002', /Boolean must be 0 or 1/],
      ['42002002000000040000000800000001', /padding bytes are not zero/],
      ['420020070000000280FF000000000000', /not valid UTF-8/],
      ['4200200200000004000000080000000042', /1 bytes follow the item/],
      ['420078010000000742000000', /multiple of 8|declares/],
    ];
    for (const [h, message] of bad) {
      const err = t.throws(() => ttlv.decode(hex(h)), { code: 'ERR_TDE_TTLV' }, h);
      t.regex(err!.message, message, h);
      t.regex(err!.message, /at byte \d+/);
    }
    // A length of 4 GiB on a 12-byte input: refused before anything is allocated.
    t.throws(() => ttlv.decode(hex('42002008FFFFFFFF00000000')), {
      code: 'ERR_TDE_TTLV',
      message: /declares 4294967295/,
    });
  },
);

test(`structures nested deeper than ${MAX_DEPTH} are refused`, (t) => {
  let item: TtlvItem = { tag: 'Attribute', type: 'Structure', value: [] };
  for (let i = 0; i < MAX_DEPTH + 2; i++)
    item = { tag: 'Attribute', type: 'Structure', value: [item] };
  t.throws(() => ttlv.encode(item), { message: /nested deeper/ });
  // Hand-built bytes of the same nesting.
  let bytes = Buffer.alloc(0);
  for (let i = 0; i < MAX_DEPTH + 2; i++) {
    const head = Buffer.from('4200080100000000', 'hex');
    head.writeUInt32BE(bytes.length, 4);
    bytes = Buffer.concat([head, bytes]);
  }
  t.throws(() => ttlv.decode(bytes), { code: 'ERR_TDE_TTLV', message: /nested deeper than/ });
});

const leaf: fc.Arbitrary<TtlvItem> = fc.oneof(
  fc.record({
    tag: fc.constantFrom('UniqueIdentifier', 'NameValue', 0x540010),
    type: fc.constant('TextString' as const),
    value: fc.string(),
  }),
  fc.record({
    tag: fc.constant('CryptographicLength'),
    type: fc.constant('Integer' as const),
    value: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  }),
  fc.record({
    tag: fc.constant('KeyMaterial'),
    type: fc.constant('ByteString' as const),
    value: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    tag: fc.constant('InitialDate'),
    type: fc.constant('DateTime' as const),
    value: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  }),
  fc.record({
    tag: fc.constant('Modulus'),
    type: fc.constant('BigInteger' as const),
    value: fc.bigInt({ min: -(2n ** 200n), max: 2n ** 200n }),
  }),
  fc.record({
    tag: fc.constant('Sensitive'),
    type: fc.constant('Boolean' as const),
    value: fc.boolean(),
  }),
  fc.record({
    tag: fc.constant('State'),
    type: fc.constant('Enumeration' as const),
    value: fc.constantFrom('Active', 'PreActive', 'Destroyed', 0x80000001),
  }),
  fc.record({
    tag: fc.constant('LeaseTime'),
    type: fc.constant('Interval' as const),
    value: fc.nat({ max: 0xffffffff }),
  }),
);
const tree: fc.Arbitrary<TtlvItem> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: 'small' },
    leaf,
    fc.record({
      tag: fc.constantFrom('Attribute', 'TemplateAttribute', 0x540100),
      type: fc.constant('Structure' as const),
      value: fc.array(tie('node'), { maxLength: 4 }),
    }),
  ),
})).node as fc.Arbitrary<TtlvItem>;

test('property: decode(encode(tree)) gives the tree back', (t) => {
  fc.assert(
    fc.property(tree, (item) => {
      t.deepEqual(ttlv.decode(ttlv.encode(item)), item);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('property: random and mutated bytes decode or fail with ERR_TDE_TTLV, nothing else', (t) => {
  const samples = vectors.map((v) => hex(v.hex));
  const mutated = fc
    .tuple(fc.constantFrom(...samples), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat())
    .map(([b, at, byte, cut]) => {
      const c = Buffer.from(b);
      c[at % c.length] = byte;
      return c.subarray(0, cut % (c.length + 1));
    });
  fc.assert(
    fc.property(
      fc.oneof(
        mutated,
        fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      ),
      (bytes) => {
        try {
          ttlv.encode(ttlv.decode(bytes));
          return true;
        } catch (err) {
          return (err as { code?: string }).code === 'ERR_TDE_TTLV';
        }
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});
