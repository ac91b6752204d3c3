import { createHash } from 'node:crypto';

/** The request header that presents `token` (RFC 6750 §2.1). */
export const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` });

/**
 * A cache partition key as the token provider builds it (the SHA-256 of a caller's token,
 * base64url, then the scope set), unique per call: tests of the cache never share entries.
 */
export function partitionKey(seed: number | string, scopes = 'user.read'): string {
  return `${createHash('sha256').update(`${seed}-${Math.random()}`).digest('base64url')}:${scopes}`;
}
