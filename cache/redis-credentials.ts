import type { Logger } from 'pino';

/** What a Redis connection authenticates with when its password is a short-lived token (Entra ID). */
export interface RedisCredentials {
  username: string;
  password: string;
  /** Epoch ms: the server drops a connection whose credentials are past this. */
  expiresAt: number;
}

/**
 * Hands out current credentials (Entra: username = the token's `oid`, password = the token).
 * Called ahead of expiry, so it may return the same credentials until its own refresh-ahead
 * has a new token. Rejects when none can be had; its error message must hold no secret.
 */
export type RedisCredentialSource = () => Promise<RedisCredentials>;

/** Renew once this share of the remaining lifetime has passed. */
const RENEW_AT = 0.5;
/** Asked again this soon when the source returned the credentials we already have. */
const SAME_AGAIN_MAX_MS = 60_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

/**
 * Keeps credentials from a source current: fetched at start, renewed at half their remaining
 * lifetime, retried with a bounded backoff while the source fails. Every new set is handed to
 * `onChange` (which re-AUTHs live connections and updates what reconnects use). It never
 * throws; `problem` says why there are none (for /readyz and the log), without secrets.
 */
export class RotatingCredentials {
  private readonly source: RedisCredentialSource;
  private readonly log: Logger;
  private readonly listeners = new Set<(credentials: RedisCredentials) => void>();
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private readonly stopWaiters = new Set<() => void>();
  private stopped = false;
  current: RedisCredentials | undefined;
  /** Why the last attempt failed (log-safe), until one succeeds. */
  problem: string | undefined;

  constructor(source: RedisCredentialSource, log: Logger) {
    this.source = source;
    this.log = log;
    void this.renew();
  }

  /** Called with every new set of credentials (not with the ones current at the time of the call). */
  onChange(listener: (credentials: RedisCredentials) => void): void {
    this.listeners.add(listener);
  }

  offChange(listener: (credentials: RedisCredentials) => void): void {
    this.listeners.delete(listener);
  }

  /** Resolves once there are valid credentials, or at stop(). */
  async whenValid(): Promise<void> {
    while (!this.valid && !this.stopped) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.offChange(wake);
          this.stopWaiters.delete(wake);
          resolve();
        };
        this.onChange(wake);
        this.stopWaiters.add(wake);
      });
    }
  }

  /** Current and not expired. */
  get valid(): RedisCredentials | undefined {
    const current = this.current;
    return current && current.expiresAt > Date.now() ? current : undefined;
  }

  /** Why L2 cannot authenticate right now, or undefined when it can. */
  health(): string | undefined {
    if (this.valid) return undefined;
    if (this.problem) return `no Entra token for Redis: ${this.problem}`;
    return this.current ? 'the Entra token for Redis expired' : 'waiting for the first Entra token for Redis';
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const wake of [...this.stopWaiters]) wake();
  }

  private async renew(): Promise<void> {
    if (this.stopped) return;
    let next: RedisCredentials;
    try {
      next = await this.source();
    } catch (err) {
      this.failures += 1;
      const problem = describeProblem(err);
      if (problem !== this.problem) this.log.warn({ problem, attempt: this.failures }, 'L2: could not get an Entra token for Redis; retrying');
      this.problem = problem;
      this.schedule(Math.min(RETRY_MIN_MS * 2 ** (this.failures - 1), RETRY_MAX_MS));
      return;
    }
    if (this.stopped) return;
    const recovered = this.problem !== undefined;
    this.failures = 0;
    this.problem = undefined;
    const remaining = next.expiresAt - Date.now();
    if (next.password === this.current?.password) {
      // The source's own refresh-ahead has not produced a new token yet.
      this.schedule(Math.max(RETRY_MIN_MS, Math.min(remaining / 4, SAME_AGAIN_MAX_MS)));
      return;
    }
    this.current = next;
    if (recovered) this.log.info({ expiresInS: Math.round(remaining / 1000) }, 'L2: got an Entra token for Redis again');
    this.schedule(Math.max(RETRY_MIN_MS, remaining * RENEW_AT));
    for (const listener of this.listeners) {
      try {
        listener(next);
      } catch (err) {
        this.log.warn({ error: describeProblem(err) }, 'L2: applying new Redis credentials failed');
      }
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.renew(), ms);
    this.timer.unref();
  }
}

/** An error's name, code and first line: what the log and /readyz may show. */
function describeProblem(err: unknown): string {
  if (!(err instanceof Error)) return 'unknown error';
  const code = 'code' in err && typeof err.code === 'string' ? ` ${err.code}` : '';
  const line = (err.message.split('\n')[0] ?? '').slice(0, 200);
  return `${err.name}${code}: ${line}`;
}
