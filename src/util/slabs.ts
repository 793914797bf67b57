/**
 * Output memory for batches of chunks: one allocation per batch, cut into a view per chunk, and
 * reused once its user gives it back. Reuse spares the kernel from supplying and zeroing fresh
 * pages for every batch (at AES-NI speeds that costs as much as the encryption) and the garbage
 * collector from chasing them.
 */

/** Free slabs kept per pool: a writer has at most two batches in flight. */
const MAX_FREE = 4;

export class SlabPool {
  private readonly lent = new WeakSet<ArrayBuffer>();
  private free: ArrayBuffer[] = [];

  /** One allocation (reused when a free one is big enough) cut into views of these sizes. */
  carve(sizes: number[]): Buffer[] {
    let total = 0;
    for (const s of sizes) total += s;
    const at = this.free.findIndex((b) => b.byteLength >= total);
    // Not from Node's small-buffer pool: a batch is large and its lifetime is the caller's.
    const slab = at >= 0 ? this.free.splice(at, 1)[0] : Buffer.allocUnsafeSlow(Math.max(total, 1)).buffer;
    this.lent.add(slab);
    return cut(slab, sizes);
  }

  /**
   * Takes back the memory of a batch carved here, for the next batch. Only for callers done with
   * every buffer of that batch; buffers never given back are simply garbage-collected.
   */
  recycle(batch: Buffer[]): void {
    const slab = batch[0]?.buffer as ArrayBuffer | undefined;
    if (!slab || !this.lent.has(slab)) return;
    this.lent.delete(slab);
    if (this.free.length < MAX_FREE) this.free.push(slab);
  }

  clear(): void {
    this.free = [];
  }
}

function cut(slab: ArrayBuffer, sizes: number[]): Buffer[] {
  const views: Buffer[] = [];
  let offset = 0;
  for (const s of sizes) {
    views.push(Buffer.from(slab, offset, s));
    offset += s;
  }
  return views;
}
