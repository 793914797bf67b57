/**
 * A key check value: a short fingerprint of a key, stored beside encrypted data so that reading
 * with the wrong key fails at once with a clear error instead of as a padding failure (or, one
 * time in 256 for CBC with PKCS5 padding, as silently wrong plaintext).
 *
 * It is the first 8 bytes of HMAC-SHA256 under the key of a fixed label. It reveals nothing
 * useful about the key: finding a key from it is as hard as brute-forcing the key itself.
 */
import { createHmac } from 'node:crypto';

const LABEL = 'sstable-tde key check value v1';

export function keyCheckValue(key: Uint8Array): string {
  return createHmac('sha256', key).update(LABEL).digest().subarray(0, 8).toString('hex');
}
