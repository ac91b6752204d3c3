import { createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';

/** The pseudonymous reference to a user, from the token's `tid` and `oid`. */
export type UserReference = (tenantId: string, objectId: string) => string;

/** HKDF `info`: the derived key serves this one purpose, whatever else the master key keys. */
const HKDF_INFO = 'obo-middle-tier/user-reference/v1';

/**
 * A stable, pseudonymous reference to a user for logs and per-user rate-limit keys:
 * HMAC-SHA-256 of `tid:oid` under a secret key, truncated to 64 bits. Without the key it can
 * neither be turned back into the `oid` nor computed from a known `tid` and `oid`.
 *
 * The key is derived (HKDF-SHA-256) from `masterKey` when one is given (the service passes its
 * first cache encryption key), so every instance that shares that key computes the same
 * references; without one it is 32 random bytes, and references hold only for this instance's
 * lifetime. Computed once per validated token (the verified-token cache keeps it), not per request.
 */
export function createUserReference(masterKey?: Uint8Array): UserReference {
  const key: KeyObject = createSecretKey(masterKey ? Buffer.from(hkdfSync('sha256', masterKey, new Uint8Array(0), HKDF_INFO, 32)) : randomBytes(32));
  return (tenantId, objectId) => createHmac('sha256', key).update(`${tenantId.toLowerCase()}:${objectId.toLowerCase()}`).digest('hex').slice(0, 16);
}
