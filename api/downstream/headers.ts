/**
 * Header hygiene at the proxy, both ways. Hop-by-hop headers (RFC 9110 §7.6.1) and those a
 * `Connection` header names never cross. Headers that carry identity, routing or this hop's
 * own concerns are reserved: the caller's `Authorization` and cookies never reach the downstream,
 * and the downstream's `Set-Cookie` and challenges never reach the caller.
 */
export type HeaderBag = Record<string, string | string[] | undefined>;

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];

/** Never forwarded to the downstream: we authenticate, address and identify the call ourselves. */
const RESERVED_REQUEST = new Set([
  ...HOP_BY_HOP,
  'authorization',
  'cookie',
  'host',
  'content-length',
  // Bodies are relayed as the downstream encodes them; identity keeps `@odata.nextLink` rewritable.
  'accept-encoding',
  'expect',
  'forwarded',
  'via',
  'origin',
  'referer',
  'user-agent',
  'x-request-id',
  'client-request-id',
  'x-real-ip',
  // Trace context is ours to send: the caller's, checked (DownstreamRequest.traceHeaders), or our span's.
  'traceparent',
  'tracestate',
  // Method and URL tunnelling: OneDrive and SharePoint honour a method override on POST, some
  // servers take X-Original-URL over the path. Either would get past the method or path check.
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
]);
const RESERVED_REQUEST_PREFIXES = ['x-forwarded-', 'sec-', 'access-control-'];

/** Never passed back to the caller: its cookies, its challenges, and what this hop decides itself. */
const RESERVED_RESPONSE = new Set([
  ...HOP_BY_HOP,
  'set-cookie',
  'set-cookie2',
  'www-authenticate',
  'strict-transport-security',
  'alt-svc',
  'server',
  'date',
  'x-request-id',
  // Cacheability is this API's decision (user data: no-store), not the downstream's.
  'cache-control',
  'expires',
  'pragma',
  // middleware/security-headers.ts sets these on every answer: ours win (a unit test keeps the two lists in step).
  'content-security-policy',
  'content-security-policy-report-only',
  'x-frame-options',
  'x-content-type-options',
  'referrer-policy',
  'cross-origin-opener-policy',
]);
const RESERVED_RESPONSE_PREFIXES = ['access-control-'];

/**
 * Whether a caller's header (any case) may reach a downstream at all: the rule for direct calls
 * and for the `headers` of each `$batch` item (a direct call also drops what `Connection` names).
 */
export function isForwardableRequestHeader(name: string): boolean {
  return !isReserved(name.toLowerCase(), RESERVED_REQUEST, RESERVED_REQUEST_PREFIXES);
}

/** The caller's headers worth forwarding (Accept, Prefer, ConsistencyLevel, If-Match, …). */
export function requestHeadersForDownstream(headers: HeaderBag): Record<string, string> {
  const named = connectionNamed(headers);
  const forwarded: Record<string, string> = {};
  for (const [rawName, value] of Object.entries(headers)) {
    const name = rawName.toLowerCase();
    if (value === undefined || !isForwardableRequestHeader(name) || named.has(name)) continue;
    forwarded[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return forwarded;
}

/** The downstream's headers the caller gets (Content-Type, request-id, Retry-After, ETag, …). */
export function responseHeadersForCaller(headers: HeaderBag): Record<string, string | string[]> {
  const named = connectionNamed(headers);
  const passed: Record<string, string | string[]> = {};
  for (const [rawName, value] of Object.entries(headers)) {
    const name = rawName.toLowerCase();
    if (value === undefined || isReserved(name, RESERVED_RESPONSE, RESERVED_RESPONSE_PREFIXES) || named.has(name)) continue;
    passed[name] = value;
  }
  return passed;
}

function isReserved(name: string, reserved: Set<string>, prefixes: string[]): boolean {
  return reserved.has(name) || prefixes.some((prefix) => name.startsWith(prefix));
}

/** RFC 9110 §7.6.1: the headers a `Connection` header lists are hop-by-hop too. */
function connectionNamed(headers: HeaderBag): Set<string> {
  const connection = headers['connection'];
  const text = Array.isArray(connection) ? connection.join(',') : (connection ?? '');
  return new Set(
    text
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}
