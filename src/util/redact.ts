/**
 * Quoting user input back in error messages, except what looks like key material: an operator
 * who pastes a key into the wrong setting must not find it in logs.
 */

/** Base64 or hex of 128 bits or more, with no words or path in it. */
export function looksLikeKey(value: string): boolean {
  const v = value.trim();
  if (/^[0-9a-fA-F]{32,}$/.test(v)) return true;
  if (!/^[A-Za-z0-9+/]{20,}={0,2}$/.test(v)) return false;
  // A transformation (AES/CBC/PKCS5Padding) or a path is not key material.
  if (
    /^[A-Za-z0-9]+(\/[A-Za-z0-9]+)+$/.test(v) &&
    !/[+=]/.test(v) &&
    v.split('/').every((p) => p.length < 20)
  )
    return false;
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/].filter((r) => r.test(v)).length;
  return classes >= 2;
}

/**
 * `"value"` for a string (or a note in its place when it looks like a key), the value itself for
 * a number, boolean or null, and only the kind of anything else: a map or list given where a
 * word was expected may hold passwords, or (through YAML aliases) itself.
 */
export function quote(value: unknown): string {
  if (typeof value === 'string') {
    return looksLikeKey(value)
      ? '(a value that looks like key material, not shown)'
      : JSON.stringify(value);
  }
  const t = typeof value;
  if (value === null || t === 'number' || t === 'boolean' || t === 'bigint') {
    return String(value);
  }
  if (Array.isArray(value)) return 'a list';
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return 'binary data';
  return typeof value === 'object' ? 'a map' : `a value of type ${typeof value}`;
}
