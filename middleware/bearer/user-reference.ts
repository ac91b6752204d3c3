import { createHmac } from 'node:crypto';

/**
 * A pseudonymous, stable reference to a user for logs and rate-limit keys: HMAC-SHA-256 of
 * `tid:oid`, keyed by the API's client id, truncated to 64 bits. It cannot be turned back into
 * the `oid`; an operator who knows a user's `tid` and `oid` can compute it to find their requests.
 */
export function userReference(key: string, tenantId: string, objectId: string): string {
  return createHmac('sha256', key).update(`${tenantId.toLowerCase()}:${objectId.toLowerCase()}`).digest('hex').slice(0, 16);
}
