import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import type { OpenIdMetadataSource } from '../../middleware/bearer/openid-metadata.js';

/**
 * A minimal token issuer for validator-level tests: RSA keys, a JWKS served over loopback HTTP
 * (read by jose's real remote key set), and signing of arbitrary header and payload bytes,
 * including bytes no JSON encoder would write (invalid UTF-8). The emulator signs only JSON text.
 */
export interface LocalIssuer {
  tenantId: string;
  clientId: string;
  issuer: string;
  /** What the validator reads as the authority's metadata (single tenant). */
  metadata: OpenIdMetadataSource;
  /** The kid that signs by default. */
  kid: string;
  /** Adds a published key (RSA, 2048 bits unless told); returns its kid. */
  addKey(modulusLength?: number): string;
  /** Stops publishing a key (it still signs). */
  retire(kid: string): void;
  /** Claims of a valid v2 token for this API, `overrides` merged (undefined deletes). */
  claims(overrides?: Record<string, unknown>, nowMs?: number): Record<string, unknown>;
  /** A token of these claims (JSON objects, or raw bytes used as they are). */
  sign(payload: Record<string, unknown> | Buffer, options?: { header?: Record<string, unknown> | Buffer; kid?: string }): string;
  /** JWKS requests served. */
  readonly jwksHits: number;
  close(): Promise<void>;
}

export async function startLocalIssuer(): Promise<LocalIssuer> {
  const tenantId = randomUUID();
  const clientId = randomUUID();
  const issuer = `https://login.example.test/${tenantId}/v2.0`;
  const keys = new Map<string, { privateKey: KeyObject; publicKey: KeyObject; published: boolean }>();
  let hits = 0;
  const addKey = (modulusLength = 2048): string => {
    const pair = generateKeyPairSync('rsa', { modulusLength });
    const kid = randomUUID();
    keys.set(kid, { ...pair, published: true });
    return kid;
  };
  const kid = addKey();
  const server: Server = createServer((_req, res) => {
    hits++;
    const published = [...keys].filter(([, key]) => key.published);
    const jwks = published.map(([id, key]) => ({ ...key.publicKey.export({ format: 'jwk' }), kid: id, use: 'sig', issuer }));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: jwks }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`;
  const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64url');
  const encode = (part: Record<string, unknown> | Buffer) => b64(Buffer.isBuffer(part) ? part : JSON.stringify(part));

  return {
    tenantId,
    clientId,
    issuer,
    metadata: { get: () => Promise.resolve({ v2Issuer: issuer, jwksUri }), loaded: () => true },
    kid,
    addKey,
    retire(id) {
      const key = keys.get(id);
      if (key) key.published = false;
    },
    claims(overrides = {}, nowMs = Date.now()) {
      const now = Math.floor(nowMs / 1000);
      const claims: Record<string, unknown> = {
        aud: clientId,
        iss: issuer,
        iat: now,
        nbf: now,
        exp: now + 3600,
        name: 'Test User',
        oid: randomUUID(),
        scp: 'access_as_user',
        tid: tenantId,
        uti: randomUUID(),
        ver: '2.0',
      };
      for (const [name, value] of Object.entries(overrides)) {
        if (value === undefined) delete claims[name];
        else claims[name] = value;
      }
      return claims;
    },
    sign(payload, options = {}) {
      const signer = options.kid ?? kid;
      const privateKey = keys.get(signer)?.privateKey;
      if (!privateKey) throw new Error(`local issuer: unknown key ${signer}`);
      const input = `${encode(options.header ?? { typ: 'JWT', alg: 'RS256', kid: signer })}.${encode(payload)}`;
      return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
    },
    get jwksHits() {
      return hits;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
