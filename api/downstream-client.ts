import type { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import type { AuthenticatedCaller } from '../middleware/access-token.js';
import { BadGatewayError, ServiceUnavailableError } from '../middleware/errors.js';
import type { DownstreamConfig } from './config.js';
import type { DownstreamToken, TokenProvider } from './token-provider.js';

export interface DownstreamRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path and query under the downstream's base URL, e.g. `/v1.0/me?$select=id`. */
  pathAndQuery: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Sent as `client-request-id`. */
  requestId: string;
  signal?: AbortSignal;
}

export interface DownstreamResponse {
  status: number;
  headers: Record<string, string>;
  body: Readable;
  /** How the token for this call was obtained (for the log). */
  tokenSource: DownstreamToken['source'];
}

export interface DownstreamClient {
  send(caller: AuthenticatedCaller, request: DownstreamRequest): Promise<DownstreamResponse>;
}

/** Response headers worth passing back to the caller; everything else stays here. */
const PASSED_BACK = ['content-type', 'request-id', 'client-request-id', 'retry-after', 'x-ms-ags-diagnostic', 'etag', 'location'];

/**
 * Calls a downstream API as the user. A 401 is answered once before it reaches the caller:
 * a CAE claims challenge by an exchange that satisfies the claims, any other 401 by evicting
 * the cached token and exchanging anew; a second 401 is a 502.
 */
export function createDownstreamClient(
  downstream: DownstreamConfig,
  tokens: TokenProvider,
  dispatcher: Dispatcher,
): DownstreamClient {
  async function call(accessToken: string, req: DownstreamRequest): Promise<Dispatcher.ResponseData> {
    try {
      return await request(`${downstream.baseUrl}${req.pathAndQuery}`, {
        method: req.method,
        dispatcher,
        headers: { ...req.headers, authorization: `Bearer ${accessToken}`, 'client-request-id': req.requestId },
        ...(req.body !== undefined ? { body: req.body } : {}),
        signal: req.signal ? AbortSignal.any([req.signal, AbortSignal.timeout(downstream.timeoutMs)]) : AbortSignal.timeout(downstream.timeoutMs),
      });
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') throw new ServiceUnavailableError('The downstream API did not answer in time.', 5);
      if (req.signal?.aborted) throw error;
      throw new BadGatewayError('The downstream API is unreachable.');
    }
  }

  return {
    async send(caller, req) {
      const acquireOptions = { correlationId: req.requestId };
      const token = await tokens.acquire(caller, downstream.scopes, acquireOptions);
      let response = await call(token.accessToken, req);
      let tokenSource = token.source;
      if (response.statusCode === 401) {
        const claims = claimsChallenge(response.headers['www-authenticate']);
        await response.body.dump();
        const retry = claims
          ? await tokens.acquire(caller, downstream.scopes, { ...acquireOptions, claims })
          : await tokens.acquire(caller, downstream.scopes, { ...acquireOptions, forceRefresh: true });
        tokenSource = retry.source;
        response = await call(retry.accessToken, req);
        if (response.statusCode === 401) {
          await response.body.dump();
          await tokens.invalidate(caller, downstream.scopes);
          throw new BadGatewayError('The downstream API rejected a freshly exchanged token.');
        }
      }
      return { status: response.statusCode, headers: pickHeaders(response.headers), body: response.body, tokenSource };
    },
  };
}

function pickHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of PASSED_BACK) {
    const value = headers[name];
    if (value !== undefined) picked[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return picked;
}

/** The decoded `claims` of a `Bearer error="insufficient_claims", claims="<base64>"` challenge. */
export function claimsChallenge(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.join(', ') : header;
  if (!value || !/error\s*=\s*"?insufficient_claims"?/i.test(value)) return undefined;
  const encoded = /claims\s*=\s*"([A-Za-z0-9+/=_-]+)"/i.exec(value)?.[1];
  if (!encoded) return undefined;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  try {
    JSON.parse(decoded);
    return decoded;
  } catch {
    return undefined;
  }
}
