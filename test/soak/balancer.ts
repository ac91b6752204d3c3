/**
 * A tiny round-robin HTTP load balancer, as the soak's stand-in for an ingress:
 *
 * - Health probe: `GET /readyz` on every backend every `probeIntervalMs` (2 s timeout). One 200
 *   puts a backend in rotation; two failed probes in a row (503, a refused connection, a
 *   timeout) take it out. Every change is recorded with its time.
 * - Fail open: with no backend in rotation, requests go round-robin to all of them, as AWS ALB
 *   and Envoy (panic threshold) do rather than answer nothing. Counted as `failOpen`.
 * - Keep-alive connections to the backends (one agent each), as a load balancer holds them.
 * - A request whose connection failed before it reached a backend is sent to the next backend
 *   in rotation, as nginx (`proxy_next_upstream error`), Envoy (`connect-failure`) and HAProxy
 *   (`retry-on conn-failure`) do: a refused connect, or a reset of a reused keep-alive socket
 *   before any response byte (the keep-alive race that Node's `reusedSocket` exists for). Only
 *   GETs go through the soak, so either is safe to resend. Those retries are counted by cause.
 * - Anything else (a reset after the request was taken, a broken response, no backend in
 *   rotation) is a connection error at the balancer: the client gets a 502 and it is counted.
 */
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export interface Backend {
  name: string;
  port: number;
}

export interface BalancerEvent {
  /** Seconds since the soak started. */
  at: number;
  backend: string;
  change: 'in' | 'out';
  reason: string;
}

export interface ConnectionError {
  at: number;
  backend: string;
  cause: string;
}

const MAX_ATTEMPTS = 3;
const PROBE_TIMEOUT_MS = 2_000;
const FAILURES_TO_TAKE_OUT = 2;

export class Balancer {
  readonly events: BalancerEvent[] = [];
  /** Connection errors that failed a request (the check wants none). */
  readonly connectionErrors: ConnectionError[] = [];
  /** Connection failures that were resent to another backend, by cause. */
  readonly retries: ConnectionError[] = [];
  /** Requests routed while no backend was in rotation. */
  failOpen = 0;
  private readonly healthy = new Map<string, boolean>();
  private readonly failures = new Map<string, number>();
  private readonly agents = new Map<string, Agent>();
  private next = 0;
  private server: Server | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(
    private readonly backends: readonly Backend[],
    private readonly clock: () => number,
    private readonly probeIntervalMs = 500,
  ) {
    for (const backend of backends) {
      this.healthy.set(backend.name, false);
      this.agents.set(backend.name, new Agent({ keepAlive: true, maxSockets: 128, keepAliveMsecs: 1_000 }));
    }
  }

  /** Listens on a free loopback port and starts probing; resolves with the base URL. */
  async start(): Promise<string> {
    this.server = createServer((req, res) => this.forward(req, res, 1, new Set()));
    this.server.keepAliveTimeout = 65_000;
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    await this.probeAll();
    this.probeTimer = setInterval(() => void this.probeAll(), this.probeIntervalMs);
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  inRotation(): string[] {
    return this.backends.filter((b) => this.healthy.get(b.name)).map((b) => b.name);
  }

  /** Resolves once `name` is in (or out of) rotation. */
  async until(name: string, inRotation: boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.healthy.get(name) !== inRotation) {
      if (Date.now() > deadline) throw new Error(`${name} did not go ${inRotation ? 'in' : 'out'} within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async close(): Promise<void> {
    clearInterval(this.probeTimer);
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const agent of this.agents.values()) agent.destroy();
  }

  private async probeAll(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      await Promise.all(this.backends.map((backend) => this.probe(backend)));
    } finally {
      this.probing = false;
    }
  }

  private async probe(backend: Backend): Promise<void> {
    const verdict = await fetch(`http://127.0.0.1:${backend.port}/readyz`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) }).then(
      async (response) => {
        await response.arrayBuffer();
        return response.status === 200 ? 'ok' : `readyz ${response.status}`;
      },
      (error: unknown) => `probe failed: ${causeOf(error)}`,
    );
    const failures = verdict === 'ok' ? 0 : (this.failures.get(backend.name) ?? 0) + 1;
    this.failures.set(backend.name, failures);
    const up = this.healthy.get(backend.name) ? failures < FAILURES_TO_TAKE_OUT : failures === 0;
    if (this.healthy.get(backend.name) === up) return;
    this.healthy.set(backend.name, up);
    this.events.push({ at: this.clock(), backend: backend.name, change: up ? 'in' : 'out', reason: up ? 'readyz 200' : verdict });
  }

  /** The next backend in rotation that this request has not tried yet. */
  private pick(tried: Set<string>): Backend | undefined {
    const failOpen = this.inRotation().length === 0;
    if (failOpen && tried.size === 0) this.failOpen += 1;
    for (let i = 0; i < this.backends.length; i++) {
      const backend = this.backends[(this.next + i) % this.backends.length];
      if (backend && (failOpen || this.healthy.get(backend.name)) && !tried.has(backend.name)) {
        this.next = (this.next + i + 1) % this.backends.length;
        return backend;
      }
    }
    return undefined;
  }

  private forward(req: IncomingMessage, res: ServerResponse, attempt: number, tried: Set<string>): void {
    const backend = this.pick(tried);
    if (!backend) {
      this.connectionErrors.push({ at: this.clock(), backend: '-', cause: 'no backend left to try' });
      return void endWith502(res);
    }
    tried.add(backend.name);
    let answered = false;
    const upstream = request(
      { host: '127.0.0.1', port: backend.port, method: req.method, path: req.url, headers: req.headers, agent: this.agents.get(backend.name) },
      (response) => {
        answered = true;
        res.writeHead(response.statusCode ?? 502, response.headers);
        response.pipe(res);
        response.on('error', () => res.destroy());
        response.on('aborted', () => {
          this.connectionErrors.push({ at: this.clock(), backend: backend.name, cause: 'response cut off' });
          res.destroy();
        });
      },
    );
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (answered) return;
      const cause = causeOf(error);
      const neverReached = error.code === 'ECONNREFUSED' || (upstream.reusedSocket && error.code === 'ECONNRESET');
      const failOpen = this.inRotation().length === 0;
      const another = this.backends.some((b) => (failOpen || this.healthy.get(b.name)) && !tried.has(b.name));
      if (neverReached && attempt < MAX_ATTEMPTS && another) {
        this.retries.push({ at: this.clock(), backend: backend.name, cause: upstream.reusedSocket ? `${cause} (reused socket)` : cause });
        return this.forward(req, res, attempt + 1, tried);
      }
      this.connectionErrors.push({ at: this.clock(), backend: backend.name, cause: upstream.reusedSocket ? `${cause} (reused socket)` : cause });
      endWith502(res);
    });
    upstream.end();
  }
}

function endWith502(res: ServerResponse): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(502, { 'content-type': 'application/json', 'x-soak-balancer': 'connection-error' });
  res.end('{"error":"bad_gateway","message":"the balancer could not reach a backend"}');
}

function causeOf(error: unknown): string {
  const code = (error as { code?: unknown; cause?: { code?: unknown } }).code ?? (error as { cause?: { code?: unknown } }).cause?.code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.name : 'unknown';
}
