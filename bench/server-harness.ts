/**
 * What every benchmarked server process shares (the reference, the floor and the service): it
 * serves `listener` on a free loopback port, reports `{ port }` over IPC, and answers the
 * orchestrator's requests over IPC, so measuring never adds an HTTP request to the server:
 *
 *   { id, kind: 'stats', gc }      this process's CPU time and memory (`gc`: after a full collection)
 *   { id, kind: 'profile-start' }  starts V8's CPU profiler (the one `--cpu-prof` uses)
 *   { id, kind: 'profile-stop', file }  stops it and writes the profile (.cpuprofile JSON)
 *   'stop'                         closes the server and exits (as does the parent going away)
 *
 * Started by bench/run.ts with fork() and --expose-gc.
 */
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';

export interface ProcessStats {
  /** User + system CPU time since the process started, microseconds. */
  cpuMicros: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** Server-specific counters (the service's cache answers). */
  counters: Record<string, number>;
}

export type HarnessRequest =
  { id: number; kind: 'stats'; gc: boolean } | { id: number; kind: 'profile-start' } | { id: number; kind: 'profile-stop'; file: string };
export type HarnessReply = { id: number; result: unknown } | { id: number; error: string };

export interface HarnessOptions {
  counters?: () => Record<string, number> | Promise<Record<string, number>>;
  close?: () => Promise<void>;
}

/** `listener`: koa's callback (which returns a promise that never rejects) or any request listener. */
export async function serveForBench(
  listener: (request: IncomingMessage, response: ServerResponse) => unknown,
  options: HarnessOptions = {},
): Promise<void> {
  const server = createServer((request, response) => void listener(request, response));
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let profiler: Session | undefined;

  const answer = async (request: HarnessRequest): Promise<unknown> => {
    switch (request.kind) {
      case 'stats': {
        if (request.gc) (globalThis as { gc?: () => void }).gc?.();
        const cpu = process.cpuUsage();
        const memory = process.memoryUsage();
        const stats: ProcessStats = {
          cpuMicros: cpu.user + cpu.system,
          rssBytes: memory.rss,
          heapUsedBytes: memory.heapUsed,
          counters: (await options.counters?.()) ?? {},
        };
        return stats;
      }
      case 'profile-start':
        profiler = new Session();
        profiler.connect();
        await profiler.post('Profiler.enable');
        // Twice --cpu-prof's default rate: enough samples in a few seconds.
        await profiler.post('Profiler.setSamplingInterval', { interval: 500 });
        await profiler.post('Profiler.start');
        return null;
      case 'profile-stop': {
        if (!profiler) throw new Error('no profile running');
        const { profile } = await profiler.post('Profiler.stop');
        profiler.disconnect();
        profiler = undefined;
        await writeFile(request.file, JSON.stringify(profile));
        return request.file;
      }
    }
  };

  async function stop(): Promise<void> {
    server.closeAllConnections();
    server.close();
    await options.close?.();
    process.exit(0);
  }
  process.on('message', (message: HarnessRequest | 'stop') => {
    if (message === 'stop') return void stop();
    answer(message).then(
      (result) => process.send?.({ id: message.id, result } satisfies HarnessReply),
      (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? error.message : String(error) } satisfies HarnessReply),
    );
  });
  process.on('disconnect', () => void stop());
  process.send?.({ port: (server.address() as AddressInfo).port });
}
