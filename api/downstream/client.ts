import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { AuthenticatedCaller } from '../../middleware/bearer/validator.js';
import { BadGatewayError, ClientClosedRequestError, GatewayTimeoutError, InvalidPathError } from '../errors.js';
import { errorCode } from '../error-code.js';
import type { DownstreamConfig } from '../config/load-config.js';
import { requestHeadersForDownstream, responseHeadersForCaller, type HeaderBag } from './headers.js';
import { parseRetryAfter } from '../token/retry-after.js';
import type { TokenProvider, TokenUseRecord } from '../token/token-provider.js';

interface DownstreamRequest {
  method: string;
  /** Path and query under the downstream's base URL, e.g. `/v1.0/me?$select=id`; sent verbatim. */
  pathAndQuery: string;
  /** The caller's headers: hop-by-hop and reserved ones are dropped here. */
  headers?: HeaderBag;
  body?: Buffer;
  /** Sent as `client-request-id`, and the correlation id of any exchange. */
  requestId: string;
  /** Aborted when the caller goes away: cancels the call, or the wait before a retry. */
  signal?: AbortSignal;
  /** Where the token's source goes: the request's log fields. */
  record?: TokenUseRecord;
  /**
   * The caller's validated trace context (`traceparent`, `tracestate`), sent on when tracing is
   * off; with tracing on, the observer puts our client span in its place.
   */
  traceHeaders?: Record<string, string>;
}

export interface DownstreamResponse {
  status: number;
  /** The downstream's headers, hop-by-hop and reserved ones removed. */
  headers: Record<string, string | string[]>;
  /** Streamed: nothing is buffered here. */
  body: Dispatcher.ResponseData['body'];
  /** What was called (to resolve relative links against). */
  url: URL;
  /** Throttling retries made before this answer. */
  retries: number;
}

export interface DownstreamClient {
  readonly config: DownstreamConfig;
  send(caller: AuthenticatedCaller, request: DownstreamRequest): Promise<DownstreamResponse>;
}

/** Safe to send twice (RFC 9110 §9.2.2): only these are retried after 429/503. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * Calls one downstream API with the token `tokens` gives (OBO for the user, or the app's own
 * token for a `"token": "app"` entry: api/token/app-tokens.ts), over the shared pooled dispatcher. No redirect is
 * followed. A 401 is answered once before it reaches the caller: a CAE claims challenge by an
 * exchange that satisfies the claims, any other 401 by exchanging anew; a second 401 is a 502,
 * and then, for FUTILE_REFRESH_WINDOW_MS, a 401 of that partition is a 502 with no exchange.
 * A 429 or 503 with `Retry-After` on an idempotent request is retried up to `maxRetries` times
 * while the total wait stays within `maxRetryWaitMs`; otherwise it goes to the caller as is.
 */
export function createDownstreamClient(downstream: DownstreamConfig, tokens: TokenProvider, dispatcher: Dispatcher): DownstreamClient {
  const base = new URL(downstream.baseUrl);
  const basePath = downstream.baseUrl.slice(base.origin.length);

  async function call(accessToken: string, req: DownstreamRequest, headers: Record<string, string>): Promise<Dispatcher.ResponseData> {
    try {
      // origin + path: undici sends the path verbatim (no dot-segment normalisation) to that origin only.
      return await dispatcher.request({
        origin: base.origin,
        path: `${basePath}${req.pathAndQuery}`,
        method: req.method,
        headers: { ...headers, authorization: `Bearer ${accessToken}` },
        ...(req.body !== undefined ? { body: req.body } : {}),
        ...(req.signal ? { signal: req.signal } : {}),
        headersTimeout: downstream.timeoutMs,
        bodyTimeout: downstream.timeoutMs,
      });
    } catch (error) {
      if (req.signal?.aborted) throw new ClientClosedRequestError();
      const code = errorCode(error);
      if (code === 'UND_ERR_HEADERS_TIMEOUT') throw new GatewayTimeoutError();
      if (code === 'UND_ERR_INVALID_ARG') throw new InvalidPathError('The path has characters that cannot be sent.');
      throw new BadGatewayError('The downstream API is unreachable.');
    }
  }

  /** One call with a token from the provider, and the one 401 answer described above. */
  async function authorizedCall(
    caller: AuthenticatedCaller,
    req: DownstreamRequest,
    headers: Record<string, string>,
  ): Promise<Dispatcher.ResponseData> {
    const acquireOptions = { correlationId: req.requestId, ...(req.record ? { record: req.record } : {}) };
    const token = await tokens.acquire(caller, downstream.scopes, acquireOptions);
    const response = await call(token.accessToken, req, headers);
    if (response.statusCode !== 401) return response;
    const claims = claimsChallenge(response.headers['www-authenticate']);
    await response.body.dump();
    const retry = claims
      ? await tokens.acquire(caller, downstream.scopes, { ...acquireOptions, claims })
      : await tokens.acquire(caller, downstream.scopes, { ...acquireOptions, forceRefresh: true });
    // The provider held the refresh back (it did not help lately): the same token, the same 401.
    if (retry.accessToken === token.accessToken) throw new BadGatewayError('The downstream API rejected a freshly exchanged token.');
    const second = await call(retry.accessToken, req, headers);
    if (second.statusCode === 401) {
      await second.body.dump();
      // A fresh token rejected too: keep it (another exchange would give its twin) and hold back
      // forced refreshes of this partition for a while. A claims token goes: the next challenge starts over.
      if (claims) await tokens.invalidate(caller, downstream.scopes);
      else tokens.refreshDidNotHelp(caller, downstream.scopes);
      throw new BadGatewayError('The downstream API rejected a freshly exchanged token.');
    }
    return second;
  }

  /** How long to wait before retrying this answer, or undefined to pass it on. */
  function throttleDelayMs(response: Dispatcher.ResponseData, method: string, retries: number, waitedMs: number): number | undefined {
    if ((response.statusCode !== 429 && response.statusCode !== 503) || !IDEMPOTENT.has(method) || retries >= downstream.maxRetries) return undefined;
    const header = response.headers['retry-after'];
    const seconds = parseRetryAfter(Array.isArray(header) ? header[0] : header);
    if (seconds === undefined) return undefined;
    const delayMs = Math.ceil(seconds * 1000);
    return waitedMs + delayMs <= downstream.maxRetryWaitMs ? delayMs : undefined;
  }

  return {
    config: downstream,
    async send(caller, req) {
      if (!req.pathAndQuery.startsWith('/')) throw new InvalidPathError('The path must start with /.');
      const headers = { ...requestHeadersForDownstream(req.headers ?? {}), ...req.traceHeaders, 'client-request-id': req.requestId };
      let retries = 0;
      let waitedMs = 0;
      for (;;) {
        const response = await authorizedCall(caller, req, headers);
        const delayMs = throttleDelayMs(response, req.method, retries, waitedMs);
        if (delayMs === undefined) {
          return {
            status: response.statusCode,
            headers: responseHeadersForCaller(response.headers),
            body: response.body,
            url: new URL(`${basePath}${req.pathAndQuery}`, base.origin),
            retries,
          };
        }
        await response.body.dump();
        try {
          await sleep(delayMs, undefined, req.signal ? { signal: req.signal } : {});
        } catch {
          throw new ClientClosedRequestError();
        }
        retries += 1;
        waitedMs += delayMs;
      }
    },
  };
}

/** The decoded `claims` of a `Bearer error="insufficient_claims", claims="<base64>"` challenge. */
function claimsChallenge(header: string | string[] | undefined): string | undefined {
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
