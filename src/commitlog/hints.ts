/**
 * Hints files in Cassandra's encrypted framing: the same blocks as a commit log section
 * (int encrypted length | int plain length | ciphertext, decrypting to int raw length | LZ4
 * output), one file-wide IV, and hint entries framed like commit log entries. The cipher, IV and
 * key alias live in the descriptor beside the file (`<host id>-<timestamp>-<version>.json`, under
 * parameters.encryption), as Cassandra's HintsDescriptor keeps them; a `.crc32` file beside it
 * holds the CRC32 of the whole hints file.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

import { ChunkCipher, createChunkCipher } from '../cipher/chunk-cipher';
import { lz4Napi, plausibleLength } from '../compression/codecs';
import { fromSystem, TdeError } from '../errors';
import { writeFully } from '../util/files';
import { BLOCK_HEADER_SIZE, frameEntry, readEntries } from './format';
import { headerCipher, SegmentEncryption, SegmentKeyResolver } from './segment';

export interface HintsFileNames {
  data: string;
  descriptor: string;
  crc: string;
}

/** `<dir>/<hostId>-<timestamp>-<version>.hints` and its descriptor and checksum files. */
export function hintsFileNames(
  dir: string,
  hostId: string,
  timestamp: number,
  version = 2,
): HintsFileNames {
  const base = `${dir}/${hostId}-${timestamp}-${version}`;
  return { data: `${base}.hints`, descriptor: `${base}.json`, crc: `${base}.crc32` };
}

export class HintsWriter {
  private crc = 0;
  private position = 0;

  private constructor(
    private readonly names: HintsFileNames,
    private readonly fd: fs.promises.FileHandle,
    private readonly cipher: ChunkCipher,
    private readonly blockLength: number,
  ) {}

  static async create(
    names: HintsFileNames,
    descriptor: { hostId: string; timestamp: number; version?: number },
    encryption: SegmentEncryption,
    blockLength = 65536,
  ): Promise<HintsWriter> {
    const probe = createChunkCipher({
      cipher_algorithm: encryption.transformation,
      secret_key_strength: encryption.key.length * 8,
      key: encryption.key,
    });
    const iv = randomBytes(probe.choice.ivLength || probe.choice.blockSize);
    probe.destroy();
    const cipher = createChunkCipher({
      cipher_algorithm: encryption.transformation,
      secret_key_strength: encryption.key.length * 8,
      key: encryption.key,
      fixed_iv: iv,
    });
    const json = {
      hostId: descriptor.hostId,
      version: descriptor.version ?? 2,
      timestamp: descriptor.timestamp,
      parameters: {
        encryption: {
          encCipher: cipher.transformation,
          encIV: iv.toString('hex'),
          encKeyAlias: encryption.keyAlias,
        },
      },
    };
    try {
      await fs.promises.writeFile(names.descriptor, JSON.stringify(json), {
        flag: 'wx',
        mode: 0o600,
      });
      const fd = await fs.promises.open(names.data, 'wx', 0o600);
      return new HintsWriter(names, fd, cipher, blockLength);
    } catch (err) {
      cipher.destroy();
      throw fromSystem(err, names.data, 'create hints file');
    }
  }

  /** Writes hints (serialized) as one or more encrypted blocks. */
  async write(hints: Uint8Array[]): Promise<void> {
    const data = Buffer.concat(hints.map((h) => frameEntry(h)));
    const plain: Buffer[] = [];
    for (let at = 0; at < data.length; at += this.blockLength) {
      const slice = data.subarray(at, at + this.blockLength);
      const compressed = await lz4Napi().compress(slice);
      const block = Buffer.alloc(4 + compressed.length);
      block.writeInt32BE(slice.length, 0);
      compressed.copy(block, 4);
      plain.push(block);
    }
    const encrypted = await this.cipher.encryptBatch(plain);
    const parts: Buffer[] = [];
    encrypted.forEach((e, i) => {
      const head = Buffer.alloc(BLOCK_HEADER_SIZE);
      head.writeInt32BE(e.length, 0);
      head.writeInt32BE(plain[i].length, 4);
      parts.push(head, e);
    });
    for (const p of parts) this.crc = zlib.crc32(p, this.crc);
    try {
      for (const p of parts) {
        await writeFully(this.fd, p, this.position);
        this.position += p.length;
      }
    } catch (err) {
      throw fromSystem(err, this.names.data, 'write hints to');
    }
  }

  /** Syncs the file and writes its checksum file. */
  async close(): Promise<void> {
    try {
      await this.fd.sync();
      await this.fd.close();
      await fs.promises.writeFile(this.names.crc, String(this.crc >>> 0), { mode: 0o600 });
    } catch (err) {
      throw fromSystem(err, this.names.data, 'close hints file');
    } finally {
      this.cipher.destroy();
    }
  }
}

export interface HintsReport {
  file: string;
  blocks: number;
  hints: number;
  dataBytes: number;
}

/** Reads a hints file through, checking its CRC file, every block and every hint's checksums. */
export async function readHintsFile(
  names: HintsFileNames,
  resolveKey: SegmentKeyResolver,
  onHint?: (hint: Buffer) => void,
): Promise<HintsReport> {
  const fail = (
    what: string,
    code: 'ERR_TDE_SEGMENT_DAMAGED' | 'ERR_TDE_SEGMENT_HEADER' = 'ERR_TDE_SEGMENT_DAMAGED',
  ): never => {
    throw new TdeError(code, `${names.data}: ${what}`, { file: names.data });
  };
  let descriptor: { parameters?: { encryption?: Record<string, string> } };
  let data: Buffer;
  try {
    descriptor = JSON.parse(await fs.promises.readFile(names.descriptor, 'utf8'));
    data = await fs.promises.readFile(names.data);
  } catch (err) {
    if (err instanceof SyntaxError)
      return fail(`its descriptor ${names.descriptor} is not JSON`, 'ERR_TDE_SEGMENT_HEADER');
    throw fromSystem(err, names.data, 'read hints');
  }
  const enc = descriptor?.parameters?.encryption;
  const aliasOk = enc?.encKeyAlias === undefined || typeof enc.encKeyAlias === 'string';
  if (
    !enc ||
    typeof enc.encCipher !== 'string' ||
    typeof enc.encIV !== 'string' ||
    !/^([0-9a-fA-F]{2})+$/.test(enc.encIV) ||
    !aliasOk
  ) {
    return fail(
      'its descriptor names no encryption (encCipher, encIV) in the right form',
      'ERR_TDE_SEGMENT_HEADER',
    );
  }
  const crcText = await fs.promises.readFile(names.crc, 'utf8').catch(() => undefined);
  if (crcText !== undefined && Number(crcText.trim()) !== zlib.crc32(data) >>> 0) {
    fail(`the file does not match its checksum file ${names.crc}`);
  }

  const cipher = await headerCipher(
    enc.encCipher,
    enc.encKeyAlias ?? '',
    enc.encIV,
    names.descriptor,
    resolveKey,
  );
  try {
    const report: HintsReport = { file: names.data, blocks: 0, hints: 0, dataBytes: 0 };
    const blocks: Buffer[] = [];
    for (let at = 0; at < data.length;) {
      if (data.length - at < BLOCK_HEADER_SIZE) fail(`a block header at ${at} is cut off`);
      const n = data.readInt32BE(at);
      if (n < 0 || n > data.length - at - BLOCK_HEADER_SIZE)
        fail(`a block at ${at} claims ${n} bytes, more than the file holds`);
      blocks.push(data.subarray(at + BLOCK_HEADER_SIZE, at + BLOCK_HEADER_SIZE + n));
      at += BLOCK_HEADER_SIZE + n;
    }
    const plain = await cipher
      .decryptBatch(blocks)
      .catch((err) => fail(`a block does not decrypt: ${(err as Error).message}`));
    const parts: Buffer[] = [];
    for (const p of plain) {
      // Lengths are checked before LZ4 sets memory aside for them: a damaged block that still
      // decrypts yields random ones.
      if (p.length < 8) fail(`a block holds ${p.length} bytes, too few for its lengths`);
      const raw = p.readInt32BE(0);
      if (raw < 0 || p.readUInt32LE(4) !== raw || !plausibleLength('LZ4', p.length - 4, raw)) {
        fail(
          `a block's lengths (${raw} and ${p.readUInt32LE(4)}) do not fit its ${p.length} ` +
            'bytes',
        );
      }
      const out = await lz4Napi()
        .uncompress(p.subarray(4))
        .catch(() => fail('a block does not decompress'));
      if (out.length !== raw) fail(`a block decompresses to ${out.length} bytes, not ${raw}`);
      parts.push(out);
    }
    const walk = readEntries(Buffer.concat(parts));
    if (walk.fault) fail(`${walk.fault.reason} (at byte ${walk.fault.offset} of the hints)`);
    for (const h of walk.entries) onHint?.(h);
    report.blocks = blocks.length;
    report.hints = walk.entries.length;
    report.dataBytes = parts.reduce((n, p) => n + p.length, 0);
    return report;
  } finally {
    cipher.destroy();
  }
}
