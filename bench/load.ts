/**
 * The load generator: a process of its own, so the API's process does nothing but serve.
 * bench/run.ts forks it and sends commands over IPC (`{ id, command }`); each answer is
 * `{ id, result }` or `{ id, error }`. Latencies travel as Float64Arrays (advanced serialization).
 */
import { readFile } from 'node:fs/promises';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { Pool } from 'undici';

export type LoadCommand =
  /** Reads the token file (one token per line); user i presents token i. */
  | { kind: 'tokens'; file: string }
  /** Requests `url` for `seconds` over `connections`, user after user over the first `users` tokens. */
  | { kind: 'http'; url: string; users: number; seconds: number; connections: number }
  /** Requests `url` once per user, `concurrency` at a time (fills the caches). */
  | { kind: 'warm'; url: string; users: number; concurrency: number }
  /** Sequential GETs of the cache's own Redis values, one at a time, for `seconds`. */
  | { kind: 'redis'; url: string; keyPrefix: string; seconds: number };

export interface HttpResult {
  /** 2xx responses. */
  ok: number;
  failed: number;
  seconds: number;
  /** One per 2xx response, milliseconds. */
  latenciesMs: Float64Array;
}

export interface WarmResult {
  ok: number;
  failed: number;
  seconds: number;
  /** Status of the first failure, for the report. */
  firstFailure?: number;
}

export interface RedisResult {
  keys: number;
  latenciesMs: Float64Array;
}

export type LoadMessage = { id: number; command: LoadCommand };
export type LoadReply = { id: number; result: unknown } | { id: number; error: string } | { id: number; progress: number };

/** Runs commands; the token file read last is the users' tokens. */
function createRunner(): (id: number, command: LoadCommand) => Promise<unknown> {
  let tokens: string[] = [];
  const usersOf = (count: number): string[] => {
    if (count > tokens.length) throw new Error(`${count} users asked for, ${tokens.length} tokens loaded`);
    return tokens.slice(0, count);
  };
  return async (id, command) => {
    switch (command.kind) {
      case 'tokens':
        tokens = (await readFile(command.file, 'utf8')).split('\n').filter(Boolean);
        return tokens.length;
      case 'http':
        return httpLoad(command.url, usersOf(command.users), command.seconds, command.connections);
      case 'warm':
        return warm(command.url, usersOf(command.users), command.concurrency, (done) => process.send?.({ id, progress: done } satisfies LoadReply));
      case 'redis':
        return redisGets(command.url, command.keyPrefix, command.seconds);
    }
  };
}

async function httpLoad(url: string, users: string[], seconds: number, connections: number): Promise<HttpResult> {
  let next = 0;
  let failed = 0;
  const latencies: number[] = [];
  const instance = autocannon({
    url,
    connections,
    duration: seconds,
    requests: [
      {
        setupRequest(request) {
          request.headers['authorization'] = `Bearer ${users[next] ?? ''}`;
          next = (next + 1) % users.length;
          return request;
        },
      },
    ],
  });
  instance.on('response', (_client, statusCode, _bytes, responseTimeMs) => {
    if (statusCode >= 200 && statusCode < 300) latencies.push(responseTimeMs);
    else failed++;
  });
  const result = await instance;
  return { ok: latencies.length, failed: failed + result.errors + result.timeouts, seconds: result.duration, latenciesMs: Float64Array.from(latencies) };
}

/** Reports progress every tenth of the users (when there are many). */
async function warm(url: string, users: string[], concurrency: number, progress: (done: number) => void): Promise<WarmResult> {
  const step = users.length >= 10_000 ? users.length / 10 : Number.POSITIVE_INFINITY;
  const { origin, pathname } = new URL(url);
  const pool = new Pool(origin, { connections: concurrency });
  const started = performance.now();
  let next = 0;
  let ok = 0;
  let failed = 0;
  let firstFailure: number | undefined;
  const worker = async (): Promise<void> => {
    while (next < users.length) {
      const token = users[next++] ?? '';
      const response = await pool.request({ path: pathname, method: 'GET', headers: { authorization: `Bearer ${token}` } });
      await response.body.dump();
      if (response.statusCode >= 200 && response.statusCode < 300) ok++;
      else {
        failed++;
        firstFailure ??= response.statusCode;
      }
      if ((ok + failed) % step === 0) progress(ok + failed);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    await pool.close();
  }
  return { ok, failed, seconds: (performance.now() - started) / 1000, ...(firstFailure !== undefined ? { firstFailure } : {}) };
}

/** The baseline for the L2 path: ioredis GETs of real cache values, as the service itself would do them. */
async function redisGets(url: string, keyPrefix: string, seconds: number): Promise<RedisResult> {
  const redis = new Redis(url, { lazyConnect: true });
  await redis.connect();
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [nextCursor, batch] = await redis.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      keys.push(...batch.filter((key) => !key.startsWith(`${keyPrefix}lock:`)));
      cursor = nextCursor;
    } while (cursor !== '0' && keys.length < 1000);
    if (keys.length === 0) throw new Error('no cache values in Redis to read');
    const latencies: number[] = [];
    const deadline = performance.now() + seconds * 1000;
    for (let i = 0; performance.now() < deadline; i++) {
      const started = performance.now();
      await redis.getBuffer(keys[i % keys.length] ?? '');
      latencies.push(performance.now() - started);
    }
    return { keys: keys.length, latenciesMs: Float64Array.from(latencies) };
  } finally {
    redis.disconnect();
  }
}

const run = createRunner();
process.on('message', (message: LoadMessage) => {
  run(message.id, message.command).then(
    (result) => process.send?.({ id: message.id, result } satisfies LoadReply),
    (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? error.message : String(error) } satisfies LoadReply),
  );
});
process.on('disconnect', () => process.exit(0));
