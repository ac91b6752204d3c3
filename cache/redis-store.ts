import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { BreakerOptions } from './breaker.js';
import { CacheConfigError, L2UnavailableError, type L2Op } from './errors.js';
import type { L2Health, L2Store } from './l2-store.js';
import { RotatingCredentials, type RedisCredentials, type RedisCredentialSource } from './redis-credentials.js';
import { withResilience } from './resilient-store.js';

export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL, optionally with `user:password@` and a `/db`. */
  url?: string;
  /** Redis Cluster seed nodes as `host:port` (IPv6 as `[addr]:port`). */
  clusterNodes?: string[];
  /** Bound on every command (CACHE_L2_TIMEOUT_MS). */
  commandTimeoutMs: number;
  breaker?: BreakerOptions;
  logger: Logger;
  /** Cluster only (a URL carries its own): ACL user, password and TLS for every node. */
  username?: string;
  password?: string;
  tls?: boolean;
  /** How long one connection attempt may take. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Upper bound of the reconnect backoff. Default 2000 ms. */
  maxReconnectDelayMs?: number;
  /**
   * Short-lived credentials (REDIS_AUTH=entra: the token's `oid` and the token) instead of a
   * password: every connection authenticates with the current ones, live command connections
   * re-AUTH before they expire, and the subscriber is replaced by one with fresh credentials.
   */
  credentials?: RedisCredentialSource;
}

type Connection = Redis | Cluster;

/** How long a replacement subscriber may take to connect and subscribe before we keep the old one. */
const SUBSCRIBER_SWAP_TIMEOUT_MS = 10_000;

// Compare-and-delete: only the owner that took the lock may release it.
const UNLOCK_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/**
 * An L2Store on Redis (single server or Cluster) with command timeouts and a circuit breaker.
 * Commands fail fast while disconnected (no offline queue); ioredis reconnects by itself
 * with a bounded backoff, and the breaker lets traffic back in after a successful probe.
 */
export function createRedisStore(options: RedisStoreOptions): L2Store {
  if (!(options.commandTimeoutMs > 0)) throw new CacheConfigError('commandTimeoutMs must be a positive number');
  return withResilience(new RedisStore(options), {
    commandTimeoutMs: options.commandTimeoutMs,
    breaker: options.breaker,
    logger: options.logger,
  });
}

/**
 * A plain command connection to the same Redis, set up like the store's (URL or cluster, TLS,
 * credentials, fail-fast while disconnected, bounded commands, reconnects), for another user of
 * it (the rate limiter). The caller handles its `error` events and quits it.
 */
export function createRedisConnection(options: RedisStoreOptions): Redis | Cluster {
  const auth = options.credentials ? new RotatingCredentials(options.credentials, options.logger) : undefined;
  const { client } = connect(options, auth);
  if (auth) {
    authenticateWith(client, auth, options.logger);
    client.once('end', () => auth.stop());
  }
  return client;
}

/** The raw ioredis store, without timeouts or breaker; use createRedisStore. */
class RedisStore implements L2Store {
  private readonly client: Connection;
  private readonly newSubscriber: () => Connection;
  private readonly log: Logger;
  private readonly auth: RotatingCredentials | undefined;
  private subscriber: Connection | undefined;
  private readonly listeners = new Map<string, Set<(message: string) => void>>();
  /** Told when the subscriber's connection drops: messages published until it is back are lost. */
  private readonly interruptions = new Set<() => void>();
  private swapping = false;
  private closed = false;

  constructor(options: RedisStoreOptions) {
    this.log = options.logger;
    this.auth = options.credentials ? new RotatingCredentials(options.credentials, this.log) : undefined;
    const { client, newSubscriber, target } = connect(options, this.auth);
    this.client = client;
    this.newSubscriber = newSubscriber;
    watch(client, this.log, { target, role: 'commands' });
    client.once('ready', () => void this.inspectMemoryPolicy());
    if (this.auth) {
      authenticateWith(client, this.auth, this.log);
      // A subscriber cannot re-AUTH (RESP2 subscribe mode): it is replaced instead.
      this.auth.onChange(() => void this.replaceSubscriber());
    }
  }

  async get(key: string): Promise<Buffer | null> {
    return this.command('get', (client) => client.getBuffer(key));
  }

  /** MGET on one server; on a Cluster (keys in any slots) the GETs at once, each to its node. */
  async getMany(keys: string[]): Promise<(Buffer | null)[]> {
    if (keys.length === 0) return [];
    return this.command('get', (client) =>
      client instanceof Cluster ? Promise.all(keys.map((key) => client.getBuffer(key))) : client.mgetBuffer(...keys),
    );
  }

  async set(key: string, value: Buffer, ttlMs: number): Promise<void> {
    await this.command('set', (client) => client.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs))));
  }

  async del(key: string): Promise<void> {
    await this.command('del', (client) => client.del(key));
  }

  async tryLock(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const reply = await this.command('lock', (client) => client.set(key, owner, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'));
    return reply === 'OK';
  }

  async unlock(key: string, owner: string): Promise<void> {
    await this.command('unlock', (client) => client.eval(UNLOCK_SCRIPT, 1, key, owner));
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.command('publish', (client) => client.publish(channel, message));
  }

  async subscribe(channel: string, listener: (message: string) => void, onInterrupted?: () => void): Promise<() => Promise<void>> {
    if (this.closed) throw new L2UnavailableError('subscribe', 'closed');
    // Without credentials the subscriber would connect unauthenticated: wait for them.
    await this.auth?.whenValid();
    if (this.closed) throw new L2UnavailableError('subscribe', 'closed');
    const sub = this.subscriberConnection();
    let set = this.listeners.get(channel);
    if (!set) {
      set = new Set();
      this.listeners.set(channel, set);
    }
    set.add(listener);
    if (onInterrupted) this.interruptions.add(onInterrupted);
    // Queued until connected (the subscriber keeps an offline queue); ioredis re-subscribes
    // after every reconnect by itself.
    await sub.subscribe(channel);
    return async () => {
      if (onInterrupted) this.interruptions.delete(onInterrupted);
      const current = this.listeners.get(channel);
      if (!current?.delete(listener) || current.size > 0) return;
      this.listeners.delete(channel);
      const now = this.subscriber;
      if (now?.status === 'ready') await now.unsubscribe(channel).catch(() => undefined);
    };
  }

  ready(): Promise<void> {
    if (this.client.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => this.client.once('ready', () => resolve()));
  }

  health(): L2Health {
    if (this.closed) return { status: 'degraded', detail: 'closed' };
    const authProblem = this.auth?.health();
    if (authProblem) return { status: 'degraded', detail: `${authProblem} (${this.client.status})` };
    if (this.client.status !== 'ready') return { status: 'degraded', detail: `disconnected (${this.client.status})` };
    if (this.subscriber && this.subscriber.status !== 'ready') {
      return { status: 'degraded', detail: `invalidation subscriber disconnected (${this.subscriber.status})` };
    }
    return { status: 'up' };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.auth?.stop();
    this.listeners.clear();
    this.interruptions.clear();
    await Promise.all([shutdown(this.client), this.subscriber ? shutdown(this.subscriber) : undefined]);
  }

  /**
   * Every key the cache writes carries a TTL, so Redis can cap the cache's memory with
   * `maxmemory` and a `volatile-*` policy (volatile-ttl evicts the soonest-expiring first).
   * Say once at start-up when it cannot, rather than discover it at the first OOM.
   */
  private async inspectMemoryPolicy(): Promise<void> {
    let info: string;
    try {
      info = await this.client.info('memory');
    } catch {
      return; // INFO may be disabled on managed Redis; this is advice, not a requirement
    }
    const maxmemory = /^maxmemory:(\d+)/m.exec(info)?.[1];
    const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
    if (maxmemory === undefined || policy === undefined) return;
    if (maxmemory === '0') {
      this.log.info(
        { policy },
        'L2: Redis has no maxmemory; entries leave by TTL only (to cap memory set maxmemory and maxmemory-policy volatile-ttl)',
      );
    } else if (policy === 'noeviction') {
      this.log.warn(
        { maxmemory: Number(maxmemory), policy },
        'L2: Redis refuses writes when full (noeviction); the cache then runs on L1 + create(). Prefer maxmemory-policy volatile-ttl',
      );
    }
  }

  /**
   * Runs a command on the connection, or rejects cheaply when it cannot serve right now. A
   * command lost because its connection dropped (Redis crashed or restarted) fails like one
   * tried while disconnected: the connection state says it all, and counting those losses as
   * breaker failures would keep L2 off for the breaker's open time after Redis is back.
   */
  private async command<T>(op: L2Op, run: (client: Connection) => Promise<T>): Promise<T> {
    if (this.closed) throw new L2UnavailableError(op, 'closed');
    const client = this.client;
    if (client.status !== 'ready') throw new L2UnavailableError(op, 'disconnected', `disconnected (${client.status})`);
    try {
      return await run(client);
    } catch (err) {
      if (this.closed) throw new L2UnavailableError(op, 'closed');
      if (client.status !== 'ready' || connectionLost(err)) {
        throw new L2UnavailableError(op, 'disconnected', `connection lost (${client.status})`);
      }
      throw err;
    }
  }

  private subscriberConnection(): Connection {
    if (this.subscriber) return this.subscriber;
    const sub = this.wiredSubscriber();
    this.subscriber = sub;
    return sub;
  }

  /**
   * Make before break: a new subscriber, with the current credentials, subscribes to every
   * channel before the old one is closed, so no message falls between the two (a few may
   * arrive twice, which invalidations tolerate). If the new one fails, the old one stays.
   */
  private async replaceSubscriber(): Promise<void> {
    const old = this.subscriber;
    if (!old || this.closed || this.swapping) return;
    this.swapping = true;
    const next = this.wiredSubscriber();
    try {
      const channels = [...this.listeners.keys()];
      if (channels.length > 0) {
        const timer = sleep(SUBSCRIBER_SWAP_TIMEOUT_MS, 'timeout' as const, { ref: false });
        const outcome = await Promise.race([next.subscribe(...channels), timer]);
        if (outcome === 'timeout') throw new Error(`not subscribed within ${SUBSCRIBER_SWAP_TIMEOUT_MS} ms`);
      }
      if (this.closed) throw new Error('closed');
      this.subscriber = next;
      this.log.debug('L2: invalidation subscriber replaced with fresh credentials');
      // Retired on purpose: its close is neither a lost connection nor an interruption.
      old.removeAllListeners('close');
      await shutdown(old);
    } catch (err) {
      next.disconnect();
      if (!this.closed)
        this.log.warn(
          { error: err instanceof Error ? err.message : String(err) },
          'L2: could not replace the invalidation subscriber; keeping the old one',
        );
    } finally {
      this.swapping = false;
    }
  }

  private wiredSubscriber(): Connection {
    const sub = this.newSubscriber();
    watch(sub, this.log, { target: 'subscriber', role: 'invalidation subscriber' });
    let wasReady = false;
    sub.on('ready', () => {
      wasReady = true;
    });
    sub.on('close', () => {
      if (!wasReady || sub !== this.subscriber || this.closed) return;
      for (const interrupted of this.interruptions) interrupted();
    });
    sub.on('message', (channel: string, message: string) => {
      const set = this.listeners.get(channel);
      if (!set) return;
      for (const listener of set) {
        try {
          listener(message);
        } catch (err) {
          this.log.warn({ err }, 'L2 message listener threw');
        }
      }
    });
    return sub;
  }
}

function connect(options: RedisStoreOptions, auth?: RotatingCredentials): { client: Connection; newSubscriber: () => Connection; target: string } {
  const hasUrl = options.url !== undefined && options.url !== '';
  const hasNodes = options.clusterNodes !== undefined && options.clusterNodes.length > 0;
  if (hasUrl === hasNodes) throw new CacheConfigError('give exactly one of url (REDIS_URL) or clusterNodes (REDIS_CLUSTER_NODES)');

  const maxDelay = options.maxReconnectDelayMs ?? 2000;
  const base: RedisOptions = {
    connectTimeout: options.connectTimeoutMs ?? 5000,
    keepAlive: 10_000,
    // Fail fast instead of queueing while disconnected, and do not replay commands that were
    // in flight when the connection dropped: the cache degrades instead of waiting.
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs,
    // Commands issued in one event-loop turn (concurrent requests' GETs) go out in one write:
    // measured on the L2 path of the bench, the socket write was its largest cost per request.
    enableAutoPipelining: true,
    connectionName: 'obo-cache',
    // With rotating credentials, a connection starts once there are some (authenticateWith).
    ...(auth ? { lazyConnect: true } : {}),
  };
  // The subscriber is allowed to queue its SUBSCRIBE until the server is reachable.
  const forSubscriber: Partial<RedisOptions> = {
    commandTimeout: undefined,
    maxRetriesPerRequest: null,
    enableAutoPipelining: false,
    connectionName: 'obo-cache-sub',
  };

  if (hasUrl) {
    const url = options.url as string;
    const target = describeUrl(url);
    const redisOptions: RedisOptions = {
      ...base,
      enableOfflineQueue: false,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 10), maxDelay),
    };
    const client = new Redis(url, redisOptions);
    const newSubscriber = () => subscriberWith(new Redis(url, { ...redisOptions, ...forSubscriber, enableOfflineQueue: true }), auth, options.logger);
    return { client, target, newSubscriber };
  }

  const nodes = (options.clusterNodes as string[]).map(parseNode);
  const credentials = {
    ...(options.username ? { username: options.username } : {}),
    ...(options.password ? { password: options.password } : {}),
    ...(options.tls ? { tls: {} } : {}),
  };
  const clusterOptions = (subscriber: boolean): ClusterOptions => ({
    enableOfflineQueue: subscriber,
    enableAutoPipelining: !subscriber,
    ...(auth ? { lazyConnect: true } : {}),
    clusterRetryStrategy: (times) => Math.min(100 * times, maxDelay),
    slotsRefreshTimeout: Math.max(1000, options.commandTimeoutMs * 5),
    redisOptions: { ...base, ...credentials, ...(subscriber ? forSubscriber : {}) },
  });
  const client = new Cluster(nodes, clusterOptions(false));
  return {
    client,
    target: `cluster ${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
    newSubscriber: () => subscriberWith(new Cluster(nodes, clusterOptions(true)), auth, options.logger),
  };
}

/** A subscriber keeps the current credentials for its reconnects; it cannot re-AUTH (RedisStore replaces it). */
function subscriberWith(sub: Connection, auth: RotatingCredentials | undefined, log: Logger): Connection {
  if (auth) authenticateWith(sub, auth, log, { reauth: false });
  return sub;
}

/**
 * Starts a lazy connection once there are credentials, and on every new set: updates what its
 * (re)connects authenticate with and, unless told not to, re-AUTHs it (every live node of a
 * Cluster) so the server never sees an expired token on it.
 */
function authenticateWith(conn: Connection, auth: RotatingCredentials, log: Logger, how: { reauth: boolean } = { reauth: true }): void {
  const start = () => {
    if (conn.status === 'wait') conn.connect().catch(() => undefined); // failures arrive as 'error' events
  };
  const current = auth.valid;
  if (current) {
    setCredentials(conn, current);
    start();
  }
  const update = (credentials: RedisCredentials) => {
    setCredentials(conn, credentials);
    if (how.reauth) reauthenticate(conn, credentials, log);
    start();
  };
  auth.onChange(update);
  conn.once('end', () => auth.offChange(update));
}

function setCredentials(conn: Connection, { username, password }: RedisCredentials): void {
  if (conn instanceof Cluster) {
    // New node connections are made from redisOptions; existing ones reconnect with their own options.
    const redisOptions = (conn.options.redisOptions ??= {});
    redisOptions.username = username;
    redisOptions.password = password;
    for (const node of conn.nodes('all')) {
      node.options.username = username;
      node.options.password = password;
    }
    return;
  }
  conn.options.username = username;
  conn.options.password = password;
}

function reauthenticate(conn: Connection, credentials: RedisCredentials, log: Logger, retry = true): void {
  const nodes = conn instanceof Cluster ? conn.nodes('all') : [conn];
  for (const node of nodes) {
    if (node.status !== 'ready') continue;
    node.call('AUTH', credentials.username, credentials.password).catch((err: unknown) => {
      const error = err instanceof Error ? err.message : String(err);
      // Once more (a timeout may just be a slow server); past that, the reconnect uses the new token.
      if (retry && node.options.password === credentials.password) {
        setTimeout(() => reauthenticate(node, credentials, log, false), 1_000).unref();
        return;
      }
      log.warn({ error }, 'L2: re-AUTH with a fresh Entra token failed; the connection reconnects with it when the old one expires');
    });
  }
}

function parseNode(text: string, index: number): { host: string; port: number } {
  const match = /^\s*(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})\s*$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  const host = match ? (match[1] ?? match[2]) : undefined;
  if (!host || !(port > 0 && port < 65536)) {
    throw new CacheConfigError(`cluster node ${index + 1} is not host:port`);
  }
  return { host, port };
}

/** Socket errors a command fails with when its connection died under it (before ioredis says so). */
const CONNECTION_LOST = new Set(['EPIPE', 'ECONNRESET', 'ECONNABORTED', 'ENOTCONN']);

function connectionLost(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if ('code' in err && CONNECTION_LOST.has(String(err.code))) return true;
  // ioredis, when the socket has ended but its close event has not arrived yet.
  return err.message.startsWith("Stream isn't writeable");
}

function describeUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CacheConfigError('REDIS_URL is not a valid URL');
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new CacheConfigError('REDIS_URL must start with redis:// or rediss://');
  }
  // Never log credentials: host and port only.
  return `${parsed.protocol}//${parsed.hostname}:${parsed.port || '6379'}`;
}

/** Logs connection transitions once each, and repeated errors at most every 30 s. */
function watch(conn: Connection, log: Logger, context: { target: string; role: string }): void {
  let wasReady = false;
  let lastError = '';
  let lastErrorAt = 0;
  conn.on('ready', () => {
    log.info(context, wasReady ? 'L2 reconnected' : 'L2 connected');
    wasReady = true;
    lastError = '';
  });
  conn.on('close', () => {
    if (wasReady) log.warn(context, 'L2 connection lost; reconnecting');
  });
  const onError = (err: Error) => {
    const now = Date.now();
    if (err.message === lastError && now - lastErrorAt < 30_000) return;
    lastError = err.message;
    lastErrorAt = now;
    log.warn({ ...context, error: err.message }, 'L2 connection error');
  };
  conn.on('error', onError);
  if (conn instanceof Cluster) conn.on('node error', onError);
}

async function shutdown(conn: Connection): Promise<void> {
  if (conn.status !== 'ready') {
    conn.disconnect();
    return;
  }
  const timer: Promise<'timeout'> = sleep(500, 'timeout', { ref: false });
  try {
    const result = await Promise.race([conn.quit(), timer]);
    if (result === 'timeout') conn.disconnect();
  } catch {
    conn.disconnect();
  }
}
