import type { INetworkModule, NetworkRequestOptions, NetworkResponse } from '@azure/msal-node';
import { request, type Dispatcher } from 'undici';

/** What one call to the token endpoint looked like on the wire; msal-node keeps none of it. */
export interface TokenEndpointRecord {
  /** HTTP status (msal's ServerError carries only the body's). */
  status?: number;
  retryAfter?: string;
  failure?: 'timeout' | 'network';
  /** Entra's error fields, for the log: never the token or the secret. */
  entraError?: {
    error?: string;
    suberror?: string;
    error_codes?: number[];
    trace_id?: string;
    correlation_id?: string;
  };
}

/**
 * msal-node's network module over a shared undici pool: a hard timeout per call (msal-node's
 * default fetch has none), bounded connections, and a record of the status and `Retry-After`
 * of the exchange it serves. One instance per exchange; the pool is shared.
 * HTTP error responses are returned, not thrown: msal needs their bodies to build its errors.
 */
export function createTokenEndpointClient(dispatcher: Dispatcher, timeoutMs: number, record: TokenEndpointRecord): INetworkModule {
  async function send<T>(method: 'GET' | 'POST', url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    let response: Dispatcher.ResponseData;
    try {
      response = await request(url, {
        method,
        dispatcher,
        headers: options?.headers ?? {},
        ...(method === 'POST' ? { body: options?.body ?? '' } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      record.failure = (error as Error).name === 'TimeoutError' ? 'timeout' : 'network';
      throw error;
    }
    const text = await response.body.text().catch(() => '');
    const headers = flattenHeaders(response.headers);
    record.status = response.statusCode;
    if (headers['retry-after'] !== undefined) record.retryAfter = headers['retry-after'];
    const body = parseJson(text);
    if (response.statusCode >= 400) record.entraError = pickEntraError(body);
    // A non-JSON body (a proxy's HTML error page) becomes {}: msal then fails on the status alone.
    return { status: response.statusCode, headers, body: body as T };
  }
  return {
    sendGetRequestAsync: (url, options) => send('GET', url, options),
    sendPostRequestAsync: (url, options) => send('POST', url, options),
  };
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function pickEntraError(body: Record<string, unknown>): TokenEndpointRecord['entraError'] {
  const text = (name: string) => (typeof body[name] === 'string' ? { [name]: body[name] } : {});
  const codes = Array.isArray(body['error_codes']) ? body['error_codes'].filter((c): c is number => typeof c === 'number') : [];
  return {
    ...text('error'),
    ...text('suberror'),
    ...text('trace_id'),
    ...text('correlation_id'),
    ...(codes.length > 0 ? { error_codes: codes } : {}),
  };
}
