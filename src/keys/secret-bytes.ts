/**
 * Key bytes a provider keeps between uses. They are hidden from `console.log`, `util.inspect`
 * and JSON (a storage process that logs its objects must not log keys), handed out only as
 * copies, and wiped by `wipe()`.
 */
import { inspect } from 'node:util';

export class SecretBytes {
  #bytes: Buffer;

  constructor(bytes: Uint8Array) {
    this.#bytes = Buffer.from(bytes);
  }

  /** A copy, which the caller wipes once it has handed it on. */
  copy(): Buffer {
    return Buffer.from(this.#bytes);
  }

  get length(): number {
    return this.#bytes.length;
  }

  wipe(): void {
    this.#bytes.fill(0);
  }

  toJSON(): string {
    return '[secret]';
  }

  [inspect.custom](): string {
    return `[SecretBytes: ${this.#bytes.length} bytes]`;
  }
}
