/**
 * Encrypted index and metadata components, in DSE 6.8's page layout: the file is cut into fixed
 * 4 KiB pages, each holding
 *
 *   ciphertext of the next slice of the plain file | zero fill | int encrypted length | CRC32
 *
 * where the CRC32 covers the page's first 4092 bytes (ciphertext, fill and length). Every page
 * but the last carries the same number of plain bytes (as many as still fit once encrypted), so
 * a position in the plain file maps to its page by division: positions that other components
 * hold into this one (Summary.db into Index.db, Partitions.db into Rows.db) stay valid, read
 * through the mapping, and decrypting gives back the original file byte for byte.
 *
 * Ciphertext is the table's chunk cipher: `[IV][ciphertext]`, or for GCM `[nonce][ciphertext]
 * [tag]` with additional data binding the page to its SSTable, component and position.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

import { ChunkLocator, fromSystem, TdeError } from '../errors';
import { writeFully } from '../util/files';

export const PAGE_SIZE = 4096;
const FOOTER = 8;
const CRC_COVERS = PAGE_SIZE - 4;

/** Components that hold partition keys or key-derived data, by SSTable format. */
export const SENSITIVE_COMPONENTS: Record<'big' | 'bti', string[]> = {
  big: ['Index.db', 'Summary.db', 'Statistics.db'],
  bti: ['Partitions.db', 'Rows.db', 'Statistics.db'],
};

/** Encrypts and decrypts a component's pages; made by an encrypting compressor. */
export interface PageCodec {
  /** Plain bytes per page: the most whose ciphertext still fits beside the footer. */
  readonly plainPerPage: number;
  encrypt(plain: Buffer[], firstPage: number, lastPage: number): Promise<Buffer[]>;
  decrypt(
    cipher: Buffer[],
    firstPage: number,
    lastPage: number,
    where: ChunkLocator,
  ): Promise<Buffer[]>;
}

/** The most plain bytes whose encrypted form (by `encryptedLength`) fits `room` bytes. */
export function plainCapacity(
  encryptedLength: (n: number) => number,
  room = PAGE_SIZE - FOOTER,
): number {
  let n = room;
  while (n > 0 && encryptedLength(n) > room) n--;
  return n;
}

/** Pages read or written per batch: bounded memory whatever the component's size. */
const PAGES_PER_BATCH = 256;

function sealPage(c: Buffer, page: Buffer): void {
  c.copy(page, 0);
  page.writeInt32BE(c.length, PAGE_SIZE - FOOTER);
  page.writeUInt32BE(zlib.crc32(page.subarray(0, CRC_COVERS)) >>> 0, PAGE_SIZE - 4);
}

/** The ciphertext of each page, checking its CRC and length; a TdeError names the page. */
function openPages(pages: Buffer, first: number, file: string): Buffer[] {
  const bodies: Buffer[] = [];
  for (let k = 0; k * PAGE_SIZE < pages.length; k++) {
    const i = first + k;
    const page = pages.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE);
    const at = { file, chunk: i, offset: i * PAGE_SIZE, length: PAGE_SIZE };
    if (page.readUInt32BE(PAGE_SIZE - 4) !== zlib.crc32(page.subarray(0, CRC_COVERS)) >>> 0) {
      throw new TdeError(
        'ERR_TDE_CHUNK_CHECKSUM',
        `${file}: page ${i} at offset ${i * PAGE_SIZE} fails its ` +
          'CRC32: the page is damaged; restore the SSTable from a backup or snapshot',
        at,
      );
    }
    const n = page.readInt32BE(PAGE_SIZE - FOOTER);
    if (n <= 0 || n > PAGE_SIZE - FOOTER) {
      throw new TdeError(
        'ERR_TDE_CORRUPT_CHUNK',
        `${file}: page ${i} claims ${n} encrypted bytes`,
        at,
      );
    }
    bodies.push(page.subarray(0, n));
  }
  return bodies;
}

async function readAt(
  fd: fs.promises.FileHandle,
  file: string,
  position: number,
  length: number,
): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let at = 0;
  while (at < length) {
    const { bytesRead } = await fd.read(buf, at, length - at, position + at).catch((err) => {
      throw fromSystem(err, file, 'read');
    });
    if (bytesRead === 0)
      throw new TdeError('ERR_TDE_IO', `${file} ended early at byte ${position + at}`, { file });
    at += bytesRead;
  }
  return buf;
}

/**
 * Reads an encrypted component: its plain size, any range of its plain bytes, or all of them.
 * Every page read is checked (CRC32, then decryption, then its plain length).
 */
export class EncryptedComponent {
  private constructor(
    readonly file: string,
    private readonly fd: fs.promises.FileHandle,
    private readonly codec: PageCodec,
    readonly pageCount: number,
    /** Plain bytes in the whole component. */
    readonly size: number,
  ) {}

  static async open(file: string, codec: PageCodec): Promise<EncryptedComponent> {
    const fd = await fs.promises.open(file, 'r').catch((err) => {
      throw fromSystem(err, file, 'open');
    });
    try {
      const stored = (await fd.stat()).size;
      if (stored === 0 || stored % PAGE_SIZE !== 0) {
        throw new TdeError(
          'ERR_TDE_CORRUPT_CHUNK',
          `${file} is ${stored} bytes, not a whole number of ` +
            `${PAGE_SIZE}-byte encrypted pages: it is truncated, or not encrypted`,
          { file },
        );
      }
      const count = stored / PAGE_SIZE;
      const c = new EncryptedComponent(file, fd, codec, count, 0);
      const [last] = await c.pages(count - 1, 1);
      return new EncryptedComponent(
        file,
        fd,
        codec,
        count,
        (count - 1) * codec.plainPerPage + last.length,
      );
    } catch (err) {
      await fd.close();
      throw err;
    }
  }

  /** Plain bytes of pages [first, first + n). */
  private async pages(first: number, n: number): Promise<Buffer[]> {
    const raw = await readAt(this.fd, this.file, first * PAGE_SIZE, n * PAGE_SIZE);
    const where: ChunkLocator = (k) => ({
      prefix: `${this.file}: page ${first + k} at offset ${(first + k) * PAGE_SIZE}`,
      context: {
        file: this.file,
        chunk: first + k,
        offset: (first + k) * PAGE_SIZE,
        length: PAGE_SIZE,
      },
    });
    const plain = await this.codec.decrypt(
      openPages(raw, first, this.file),
      first,
      this.pageCount - 1,
      where,
    );
    plain.forEach((p, k) => {
      const i = first + k;
      if (i < this.pageCount - 1 && p.length !== this.codec.plainPerPage) {
        throw new TdeError(
          'ERR_TDE_CORRUPT_CHUNK',
          `${this.file}: page ${i} holds ${p.length} plain bytes, ` +
            `not ${this.codec.plainPerPage}`,
          { file: this.file, chunk: i, offset: i * PAGE_SIZE },
        );
      }
    });
    return plain;
  }

  async read(position: number, length: number): Promise<Buffer> {
    if (
      !Number.isInteger(position) ||
      !Number.isInteger(length) ||
      position < 0 ||
      length < 0 ||
      position + length > this.size
    ) {
      throw new TdeError(
        'ERR_TDE_READ_RANGE',
        `cannot read ${length} bytes at ${position} of ${this.file}, ` +
          `whose plain size is ${this.size}`,
        { file: this.file },
      );
    }
    if (length === 0) return Buffer.alloc(0);
    const per = this.codec.plainPerPage;
    const first = Math.floor(position / per);
    const last = Math.floor((position + length - 1) / per);
    const joined = Buffer.concat(await this.pages(first, last - first + 1));
    return joined.subarray(position - first * per, position - first * per + length);
  }

  /** Calls `each` with the plain bytes in order, a batch of pages at a time. */
  async forEachBatch(each: (plain: Buffer) => Promise<void> | void): Promise<void> {
    for (let first = 0; first < this.pageCount; first += PAGES_PER_BATCH) {
      const n = Math.min(PAGES_PER_BATCH, this.pageCount - first);
      await each(Buffer.concat(await this.pages(first, n)));
    }
  }

  async readAll(): Promise<Buffer> {
    const parts: Buffer[] = [];
    await this.forEachBatch((p) => void parts.push(p));
    return Buffer.concat(parts);
  }

  async close(): Promise<void> {
    await this.fd.close().catch(() => {});
  }
}

/** A component stored as it is, behind the same reading interface as an encrypted one. */
export class PlainComponent {
  private constructor(
    readonly file: string,
    private readonly fd: fs.promises.FileHandle,
    readonly size: number,
  ) {}

  static async open(file: string): Promise<PlainComponent> {
    const fd = await fs.promises.open(file, 'r').catch((err) => {
      throw fromSystem(err, file, 'open');
    });
    return new PlainComponent(file, fd, (await fd.stat()).size);
  }

  async read(position: number, length: number): Promise<Buffer> {
    if (
      !Number.isInteger(position) ||
      !Number.isInteger(length) ||
      position < 0 ||
      length < 0 ||
      position + length > this.size
    ) {
      throw new TdeError(
        'ERR_TDE_READ_RANGE',
        `cannot read ${length} bytes at ${position} of ${this.file}, ` + `which has ${this.size}`,
        { file: this.file },
      );
    }
    return readAt(this.fd, this.file, position, length);
  }

  async readAll(): Promise<Buffer> {
    return this.read(0, this.size);
  }

  async close(): Promise<void> {
    await this.fd.close().catch(() => {});
  }
}

/** Plain bytes to copy into a component: an open component, or bytes held in memory. */
export interface ComponentSource {
  readonly size: number;
  read(position: number, length: number): Promise<Buffer>;
}

/**
 * Copies a component's plain bytes into `dst`: encrypted page by page when `codec` is given,
 * plain otherwise. Returns the CRC32 of the plain bytes, to check the copy against afterwards.
 */
export async function transcodeComponent(
  source: ComponentSource,
  dst: string,
  codec: PageCodec | undefined,
  mode: number,
): Promise<number> {
  const output = await fs.promises.open(dst, 'wx', 0o600).catch((err) => {
    throw fromSystem(err, dst, 'create');
  });
  let crc = 0;
  try {
    await output.chmod(mode).catch((err) => {
      throw fromSystem(err, dst, 'set the mode of');
    });
    if (codec) {
      const per = codec.plainPerPage;
      const count = Math.max(1, Math.ceil(source.size / per));
      for (let first = 0; first < count; first += PAGES_PER_BATCH) {
        const n = Math.min(PAGES_PER_BATCH, count - first);
        const start = first * per;
        const plain = await source.read(start, Math.min(n * per, source.size - start));
        crc = zlib.crc32(plain, crc);
        const slices = Array.from({ length: n }, (_, k) => plain.subarray(k * per, (k + 1) * per));
        const encrypted = await codec.encrypt(slices, first, count - 1);
        const pages = Buffer.alloc(n * PAGE_SIZE);
        encrypted.forEach((c, k) =>
          sealPage(c, pages.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE)),
        );
        await writeFully(output, pages, first * PAGE_SIZE).catch((err) => {
          throw fromSystem(err, dst, 'write');
        });
      }
    } else {
      const step = PAGES_PER_BATCH * PAGE_SIZE;
      for (let at = 0; at < source.size; at += step) {
        const plain = await source.read(at, Math.min(step, source.size - at));
        crc = zlib.crc32(plain, crc);
        await writeFully(output, plain, at).catch((err) => {
          throw fromSystem(err, dst, 'write');
        });
      }
    }
    await output.sync().catch((err) => {
      throw fromSystem(err, dst, 'sync');
    });
  } finally {
    await output.close();
  }
  return crc >>> 0;
}
