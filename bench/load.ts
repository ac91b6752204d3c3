/**
 * The Node side of the load, a process of its own so the servers' processes do nothing but
 * serve: the fill (every user's first request, filling the caches) and, only when wrk cannot
 * be had, autocannon as the load generator. bench/run.ts forks it and sends commands over IPC
 * (`{ id, command }`); each answer is `{ id, result }`, `{ id, error }` or `{ id, progress }`.
 */
import { readFile } from 'node:fs/promises';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import type { LoadResult } from './wrk.js';

export type LoadCommand =
  /** Reads the token file (one token per line); user i presents token i. */
  | { kind: 'tokens'; file: string }
  /** autocannon: requests `url` for `seconds` over `connections`, user after user over the first `users` tokens. */
  | { kind: 'http'; url: string; users: number; seconds: number; connections: number }
  /** Requests `url` once per user, `concurrency` at a time (fills the caches). */
  | { kind: 'warm'; url: string; users: number; concurrency: number };

export interface WarmResult {
  ok: number;
  failed: number;
  seconds: number;
  /** Status of the first failure, for the report. */
  firstFailure?: number;
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
        return autocannonLoad(command.url, usersOf(command.users), command.seconds, command.connections);
      case 'warm':
        return warm(command.url, usersOf(command.users), command.concurrency, (done) => process.send?.({ id, progress: done } satisfies LoadReply));
    }
  };
}

async function autocannonLoad(url: string, users: string[], seconds: number, connections: number): Promise<LoadResult> {
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
    latencies.push(responseTimeMs);
    if (statusCode >= 400) failed++;
  });
  const result = await instance;
  const sorted = Float64Array.from(latencies).sort();
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? Number.NaN;
  return { requests: latencies.length, failed: failed + result.errors + result.timeouts, seconds: result.duration, p50Ms: at(0.5), p99Ms: at(0.99) };
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

const run = createRunner();
// 'stop' is what bench/run.ts sends every child when it is done (as the servers' harness takes it).
process.on('message', (message: LoadMessage | 'stop') => {
  if (message === 'stop') process.exit(0);
  run(message.id, message.command).then(
    (result) => process.send?.({ id: message.id, result } satisfies LoadReply),
    (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? error.message : String(error) } satisfies LoadReply),
  );
});
process.on('disconnect', () => process.exit(0));
