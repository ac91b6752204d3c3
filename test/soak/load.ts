/**
 * The soak's load: an open loop at a fixed rate (a request is sent when it is due, whether or
 * not earlier ones have answered, so a stall shows up as latency rather than as fewer
 * requests), over keep-alive connections to the balancer.
 *
 * Half the users are warmed before the load (one request each, not part of the results but of
 * the exchange count); the other half arrive over the first 80 % of the run: a newly active
 * user's first request goes out as soon as it arrives, so first requests (exchanges) keep
 * happening through every fault window. Each request is for a random active user, except
 * that one user, "the hot user", gets `hotShare` of the requests: the Graph 503 fault is
 * aimed at that user's path. The load runs `seconds`, and on while `keepGoing()` says so (the
 * fault schedule is not over).
 *
 * Routes: GET /api/me (the service's own route, Graph /v1.0/me) and the token path through the
 * Graph proxy, GET /api/graph/v1.0/me (validation, the token cache, then Graph), alternating.
 * The hot user calls GET /api/graph/v1.0/me/messages instead, a path no one else calls.
 */
import { randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';

export interface SoakRequest {
  /** Seconds since the soak started, when it was sent. */
  at: number;
  ms: number;
  user: number;
  route: string;
  requestId: string;
  /** The HTTP status, or 0 when the connection to the balancer failed. */
  status: number;
  /** The JSON body's error code (ours: a string; Graph's relayed: `graph:<code>`), or the client error. */
  error?: string;
  retryAfter?: string;
}

const ROUTES = ['/api/me', '/api/graph/v1.0/me'] as const;
const HOT_ROUTE = '/api/graph/v1.0/me/messages';
export const HOT_USER = 0;

export interface LoadOptions {
  baseUrl: string;
  tokens: readonly string[];
  rate: number;
  seconds: number;
  hotShare: number;
  clock: () => number;
  /** Users 0 … warmed - 1 were warmed (see warmUsers). */
  warmed: number;
  keepGoing: () => boolean;
}

export async function runLoad(options: LoadOptions): Promise<SoakRequest[]> {
  const { baseUrl, tokens, rate, seconds, hotShare, clock, warmed, keepGoing } = options;
  const agent = new Agent({ keepAlive: true, maxSockets: 512 });
  const url = new URL(baseUrl);
  const results: SoakRequest[] = [];
  const pending = new Set<Promise<void>>();
  const arrival = seconds * 0.8;
  let sent = 0;
  let arrived = warmed;
  let alternate = 0;
  const started = clock();

  const send = (user: number): void => {
    const route = user === HOT_USER ? HOT_ROUTE : (ROUTES[alternate++ % ROUTES.length] ?? ROUTES[0]);
    const requestId = randomUUID();
    const at = clock();
    const t0 = performance.now();
    const done = new Promise<void>((resolve) => {
      const finish = (result: Omit<SoakRequest, 'at' | 'ms' | 'user' | 'route' | 'requestId'>): void => {
        results.push({ at, ms: performance.now() - t0, user, route, requestId, ...result });
        resolve();
      };
      const req = request(
        { host: url.hostname, port: url.port, path: route, agent, headers: { authorization: `Bearer ${tokens[user]}`, 'x-request-id': requestId } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', (error: NodeJS.ErrnoException) => finish({ status: 0, error: error.code ?? error.message }));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const retryAfter = res.headers['retry-after'];
            finish({
              status,
              ...(status >= 400 ? { error: errorCode(Buffer.concat(chunks).toString('utf8')) } : {}),
              ...(retryAfter ? { retryAfter } : {}),
            });
          });
        },
      );
      req.setTimeout(60_000, () => req.destroy(Object.assign(new Error('client timeout'), { code: 'ETIMEDOUT' })));
      req.on('error', (error: NodeJS.ErrnoException) => finish({ status: 0, error: error.code ?? error.message }));
      req.end();
    });
    pending.add(done);
    void done.then(() => pending.delete(done));
  };

  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const elapsed = clock() - started;
      if (elapsed >= seconds && !keepGoing()) {
        clearInterval(timer);
        return resolve();
      }
      const due = Math.floor(elapsed * rate) - sent;
      const active = Math.min(tokens.length, Math.max(warmed, 1, warmed + Math.ceil(((tokens.length - warmed) * elapsed) / arrival)));
      for (let i = 0; i < due; i++) {
        sent += 1;
        if (arrived < active) send(arrived++);
        else if (Math.random() < hotShare) send(HOT_USER);
        else send(Math.floor(Math.random() * active));
      }
    };
    const timer = setInterval(tick, 5);
  });
  await Promise.all(pending);
  agent.destroy();
  return results.sort((a, b) => a.at - b.at);
}

/** `error` of our JSON error body, or `graph:<code>` for a Graph error relayed as Graph sent it. */
function errorCode(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    if (typeof parsed.error === 'string') return parsed.error;
    if (parsed.error && typeof parsed.error === 'object' && 'code' in parsed.error) return `graph:${String(parsed.error.code)}`;
  } catch {
    // not JSON
  }
  return 'unparsed body';
}

/**
 * One request per user for users 0 … count - 1, `concurrency` at a time, so that their tokens
 * are cached. Returns the failures and each request id's user (for the request log).
 */
export async function warmUsers(
  baseUrl: string,
  tokens: readonly string[],
  count: number,
  concurrency: number,
): Promise<{ failed: number; users: Map<string, number> }> {
  let next = 0;
  let failed = 0;
  const users = new Map<string, number>();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const user = next++;
      const requestId = randomUUID();
      users.set(requestId, user);
      const headers = { authorization: `Bearer ${tokens[user]}`, 'x-request-id': requestId };
      const response = await fetch(`${baseUrl}${ROUTES[0]}`, { headers }).catch(() => undefined);
      await response?.arrayBuffer();
      if (response?.status !== 200) failed += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { failed, users };
}
