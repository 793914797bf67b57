/**
 * Output memory for batches of chunks: one allocation per batch, cut into a view per chunk, and
 * reused once its user gives it back. Reuse spares the kernel from supplying and zeroing fresh
 * pages for every batch (at AES-NI speeds that costs as much as the encryption) and the garbage
 * collector from chasing them.
 */

import { TdeError } from '../errors';

/** Free slabs kept per pool: enough for a pipeline that keeps two or three batches alive. */
const MAX_FREE = 4;

/**
 * Larger slabs are never kept: a batch is a few MiB, and a one-off read of a whole table must
 * not stay held for the life of the process.
 */
const MAX_KEPT_BYTES = 64 * 1024 * 1024;

/**
 * Slab sizes are rounded up to an eighth of their power of two (256 KiB steps for a 2 MiB
 * region), so that batches of nearly the same size, such as the stored chunks of successive
 * batches, fit each other's slabs instead of each asking for fresh memory.
 */
function slabSize(total: number): number {
  if (total <= 65536) return Math.max(total, 1);
  const step = 2 ** Math.floor(Math.log2(total)) / 8;
  return Math.ceil(total / step) * step;
}

export class SlabPool {
  private readonly lent = new WeakSet<ArrayBuffer>();
  private free: ArrayBuffer[] = [];

  /** One allocation (reused when a free one is big enough) cut into views of these sizes. */
  carve(sizes: ArrayLike<number>): Buffer[] {
    return viewsOf(this.carveSpans(sizes));
  }

  /**
   * The same allocation as {@link carve}, described as {@link Spans} rather than cut into views:
   * for output the addon fills, after which {@link viewsOf} makes the views at their final
   * lengths (one view per chunk instead of two).
   */
  carveSpans(sizes: ArrayLike<number>): Spans {
    const offsets = new Float64Array(sizes.length);
    const lengths = new Uint32Array(sizes.length);
    let total = 0;
    for (let i = 0; i < sizes.length; i++) {
      offsets[i] = total;
      lengths[i] = sizes[i];
      total += sizes[i];
    }
    const at = this.free.findIndex((b) => b.byteLength >= total);
    // Not from Node's small-buffer pool: a batch is large and its lifetime is the caller's.
    const slab =
      at >= 0 ? this.free.splice(at, 1)[0] : Buffer.allocUnsafeSlow(slabSize(total)).buffer;
    this.lent.add(slab);
    return { data: new Uint8Array(slab, 0, total), offsets, lengths };
  }

  /**
   * Takes back the memory of a batch carved here, for the next batch. Only for callers done with
   * every buffer of that batch; buffers never given back are simply garbage-collected.
   */
  recycle(batch: Buffer[]): void {
    this.recycleSlab(batch[0]?.buffer as ArrayBuffer | undefined);
  }

  /** The same for a batch handed out as {@link Spans}: its `data`'s memory. */
  recycleSlab(slab: unknown): void {
    if (!(slab instanceof ArrayBuffer) || !this.lent.has(slab)) return;
    this.lent.delete(slab);
    if (slab.byteLength > MAX_KEPT_BYTES) return;
    if (this.free.length < MAX_FREE) {
      this.free.push(slab);
      return;
    }
    // Full: keep the larger slabs, which fit any batch the smaller ones fit.
    let smallest = 0;
    for (let i = 1; i < this.free.length; i++)
      if (this.free[i].byteLength < this.free[smallest].byteLength) smallest = i;
    if (this.free[smallest].byteLength < slab.byteLength) this.free[smallest] = slab;
  }

  clear(): void {
    this.free = [];
  }
}

/** A Buffer view per span, `lengths[i]` long where given (else the span's own length). */
export function viewsOf(spans: Spans, lengths?: ArrayLike<number>): Buffer[] {
  const { data, offsets } = spans;
  const out = new Array<Buffer>(offsets.length);
  for (let i = 0; i < offsets.length; i++) {
    out[i] = Buffer.from(
      data.buffer,
      data.byteOffset + offsets[i],
      lengths ? lengths[i] : spans.lengths[i],
    );
  }
  return out;
}

/** Chunks as one buffer and where each lies in it: what the addon takes in one hand-over. */
export interface Spans {
  data: Uint8Array;
  offsets: Float64Array;
  lengths: Uint32Array;
}

/**
 * Checks a caller's {@link Spans} before they reach the addon (which checks them again): the
 * right array types, of one length, and every span inside `data`.
 */
export function checkSpans(spans: Spans, what: string): void {
  const ok =
    spans !== null &&
    typeof spans === 'object' &&
    spans.data instanceof Uint8Array &&
    spans.offsets instanceof Float64Array &&
    spans.lengths instanceof Uint32Array;
  if (!ok) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `${what} must be { data: Uint8Array, offsets: Float64Array, lengths: Uint32Array } ` +
        'with one offset and one length per chunk',
    );
  }
  if (spans.offsets.length !== spans.lengths.length) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `${what} has ${spans.offsets.length} offsets but ${spans.lengths.length} lengths: ` +
        'give one of each per chunk',
    );
  }
  // A buffer that can shrink could move a chunk out from under the addon's threads.
  const memory = spans.data.buffer as ArrayBufferLike & { resizable?: boolean };
  if (memory.resizable === true) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      `${what}: data lies in a resizable ArrayBuffer, which could shrink while the batch runs; ` +
        'copy it into a fixed-length buffer',
    );
  }
  const size = spans.data.byteLength;
  for (let i = 0; i < spans.offsets.length; i++) {
    const at = spans.offsets[i];
    if (!(Number.isInteger(at) && at >= 0 && at + spans.lengths[i] <= size)) {
      throw new TdeError(
        'ERR_TDE_INVALID_ARGUMENT',
        `${what}: chunk ${i} (offset ${at}, ${spans.lengths[i]} bytes) lies outside ` +
          `its ${size}-byte buffer`,
      );
    }
  }
}

/**
 * The chunks as {@link Spans} when they all lie in one allocation (a slab, a region read from
 * disk), so the addon takes them in one call instead of one per chunk; otherwise a copy of the
 * array (the addon holds on to what it is given until it is done).
 */
export function asSpans(chunks: Uint8Array[]): Spans | Uint8Array[] {
  if (chunks.length < 2) return chunks.slice();
  // One pass, offsets from the start of the allocation: on batches of small chunks the typed
  // array getters read here are a real share of the JS thread's time.
  const buffer = chunks[0].buffer;
  const offsets = new Float64Array(chunks.length);
  const lengths = new Uint32Array(chunks.length);
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i];
    if (c.buffer !== buffer) return chunks.slice();
    offsets[i] = c.byteOffset;
    lengths[i] = c.byteLength;
  }
  return { data: new Uint8Array(buffer), offsets, lengths };
}

/**
 * One view of buffers that lie end to end in the same memory, as the chunks of a batch carved
 * here do; undefined when they do not (or there are none).
 */
export function joinedView(buffers: Uint8Array[]): Buffer | undefined {
  if (buffers.length === 0) return undefined;
  const { buffer, byteOffset } = buffers[0];
  let end = byteOffset;
  for (const b of buffers) {
    if (b.buffer !== buffer || b.byteOffset !== end) return undefined;
    end += b.byteLength;
  }
  return Buffer.from(buffer, byteOffset, end - byteOffset);
}
