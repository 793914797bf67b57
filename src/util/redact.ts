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
  if (/^[A-Za-z0-9]+(\/[A-Za-z0-9]+)+$/.test(v) && !/[+=]/.test(v) && v.split('/').every((p) => p.length < 20)) return false;
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/].filter((r) => r.test(v)).length;
  return classes >= 2;
}

/** `"value"`, or a note in its place when it looks like a key. */
export function quote(value: unknown): string {
  if (typeof value === 'string' && looksLikeKey(value)) return '(a value that looks like key material, not shown)';
  return JSON.stringify(value);
}
