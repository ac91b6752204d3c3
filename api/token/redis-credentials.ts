import { decodeJwt } from 'jose';
import type { Logger } from 'pino';
import type { RedisCredentialSource } from '../../cache/index.js';
import { createAppTokens } from './app-tokens.js';
import type { ClientCredentialsGrant } from './exchange.js';

/** Azure Cache for Redis and Azure Managed Redis accept Entra tokens of this resource. */
const REDIS_SCOPE = 'https://redis.azure.com/.default';

export interface RedisEntraCredentials {
  /** What the Redis connections authenticate with (REDIS_AUTH=entra). */
  source: RedisCredentialSource;
  close(): Promise<void>;
}

/**
 * REDIS_AUTH=entra: the API's own app token for Redis (client credentials with its credential:
 * secret, certificate or federated token file), with username = the token's `oid`, as Azure
 * expects. Cached in a private in-process cache (never in the Redis it unlocks), refreshed
 * ahead and single-flighted by createAppTokens; the Redis store re-AUTHs before expiry.
 */
export function createRedisEntraCredentials(
  grant: ClientCredentialsGrant,
  options: { clientId: string; logger: Logger; now?: () => number },
): RedisEntraCredentials {
  const appTokens = createAppTokens(grant, { clientId: options.clientId, logger: options.logger, ...(options.now ? { now: options.now } : {}) });
  return {
    source: async () => {
      const { accessToken, expiresOn } = await appTokens.acquire([REDIS_SCOPE]);
      return { username: objectId(accessToken), password: accessToken, expiresAt: expiresOn };
    },
    close: () => appTokens.close(),
  };
}

/** The token's `oid` (our own token, just issued by Entra: read, not verified). */
function objectId(accessToken: string): string {
  let oid: unknown;
  try {
    oid = decodeJwt(accessToken).oid;
  } catch {
    oid = undefined;
  }
  if (typeof oid !== 'string' || oid === '') throw new Error('the Entra token for Redis has no oid claim');
  return oid;
}
