const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Whether `segment` is base64url exactly as an encoder writes it (no padding). Decoders ignore
 * the spare low bits of the last character, so without this check a token whose last character
 * was changed would still verify. Decided from the length and the last character alone: the
 * same answer as a decode and re-encode round trip (test/unit/canonical-base64url.property.test.ts)
 * without the two copies.
 */
export function isCanonicalBase64url(segment: string): boolean {
  if (!BASE64URL.test(segment)) return false;
  const spareBits = [0, -1, 4, 2][segment.length % 4] ?? -1;
  if (spareBits <= 0) return spareBits === 0;
  return (sextet(segment.charCodeAt(segment.length - 1)) & ((1 << spareBits) - 1)) === 0;
}

/** The 6-bit value of a base64url character (already known to be one). */
function sextet(code: number): number {
  if (code >= 97) return code - 71; // a-z: 26-51
  if (code === 95) return 63; // '_', between 'Z' and 'a'
  if (code >= 65) return code - 65; // A-Z: 0-25
  if (code >= 48) return code + 4; // 0-9: 52-61
  return 62; // '-'
}
