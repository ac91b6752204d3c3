import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { Agent, request } from 'undici';
import type { Environment } from '../../api/config/load-config.js';
import type { Emulator } from '../emulator/index.js';
import { useEmulator, useRedis } from '../support/fixtures.js';
import { emulatorEnvironment } from '../support/service.js';
import { until } from '../support/wait.js';

interface EntryPoint {
  child: ChildProcess;
  baseUrl: string;
  /** Log lines so far, parsed. */
  logs: { msg: string; [field: string]: unknown }[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(msg: string): Promise<void>;
}

/** `api/main.ts` in a process of its own, configured only through its environment, as a user starts it. */
async function startEntryPoint(emulator: Emulator, env: Environment): Promise<EntryPoint> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts'], {
    env: {
      PATH: process.env['PATH'],
      ...emulatorEnvironment(emulator),
      LOG_LEVEL: 'info',
      PORT: '0',
      NODE_EXTRA_CA_CERTS: emulator.caPath,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const logs: EntryPoint['logs'] = [];
  const waiters: { msg: string; resolve: () => void }[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line) as EntryPoint['logs'][number];
      logs.push(parsed);
      for (const waiter of waiters.filter((w) => w.msg === parsed.msg)) waiter.resolve();
    } catch {
      // not a log line
    }
  });
  const waitForLog = (msg: string) =>
    logs.some((line) => line.msg === msg)
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          waiters.push({ msg, resolve });
          void exited.then(({ code }) => reject(new Error(`the service exited (${code}) before logging "${msg}": ${stderr}`)));
        });
  await waitForLog('listening');
  const port = logs.find((line) => line.msg === 'listening')?.['port'];
  return { child, baseUrl: `http://127.0.0.1:${String(port)}`, logs, exited, waitForLog };
}

describe('graceful shutdown of the real entry point (SIGTERM)', function () {
  this.timeout(60_000);
  const emulator = useEmulator();
  const redis = useRedis();
  let client: Agent;
  let entry: EntryPoint | undefined;

  beforeEach(() => {
    // Keep-alive connections, as a load balancer holds them: the service must close them itself.
    client = new Agent({ keepAliveTimeout: 60_000, connections: 64 });
  });
  afterEach(async () => {
    emulator.faults.clear();
    emulator.resetCounters();
    if (entry && entry.child.exitCode === null && entry.child.signalCode === null) entry.child.kill('SIGKILL');
    entry = undefined;
    await client.destroy();
  });

  it('finishes every request in flight, refuses new connections, closes Redis and the pools, and exits 0', async () => {
    entry = await startEntryPoint(emulator, {
      REDIS_URL: redis.url,
      CACHE_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
      SHUTDOWN_TIMEOUT_MS: '15000',
    });
    const { baseUrl } = entry;
    const token = emulator.mint({ user: 'alice' });
    await request(`${baseUrl}/api/me`, { dispatcher: client, headers: { authorization: `Bearer ${token}` } }).then((r) => r.body.dump());

    // Load: every call waits 1.5 s at Graph, so all of them are in flight when SIGTERM lands.
    const inFlight = 30;
    emulator.faults.injectGraph({ path: '/v1.0/me', delayMs: 1_500, times: 'always' });
    emulator.resetCounters();
    const calls = Array.from({ length: inFlight }, async () => {
      const response = await request(`${baseUrl}/api/me`, { dispatcher: client, headers: { authorization: `Bearer ${token}` } });
      return { status: response.statusCode, body: (await response.body.json()) as { id?: string } };
    });
    const settled = Promise.allSettled(calls);
    await until('every call to reach Graph', () => emulator.counters.graph >= inFlight, 10_000, 10);

    const signalledAt = Date.now();
    entry.child.kill('SIGTERM');
    await entry.waitForLog('stopping: no new connections; finishing requests in flight');

    const refused = await request(`${baseUrl}/healthz`, { dispatcher: new Agent() }).then(
      () => 'answered',
      (error: { code?: string }) => error.code,
    );
    expect(refused, 'a new connection after SIGTERM').to.equal('ECONNREFUSED');

    const results = await settled;
    const failed = results.filter((result) => result.status === 'rejected' || result.value.status !== 200);
    expect(failed, 'requests in flight that failed').to.deep.equal([]);
    for (const result of results) if (result.status === 'fulfilled') expect(result.value.body.id).to.equal(emulator.users.alice.oid);

    const { code, signal } = await entry.exited;
    expect({ code, signal }).to.deep.equal({ code: 0, signal: null });
    expect(Date.now() - signalledAt, 'it exits once the requests are done, not at the deadline').to.be.lessThan(10_000);
    const stopping = entry.logs.find((line) => line.msg.startsWith('stopping'));
    expect(stopping?.['inFlight']).to.equal(inFlight);
    expect(entry.logs.find((line) => line.msg === 'stopped')).to.include({ cutOff: false });
    // The process ended by itself: nothing (Redis, pools, timers) was left open.
    expect(entry.logs.map((line) => line.msg)).not.to.include('something still holds the event loop after stopping; exiting anyway');
    const requestLines = entry.logs.filter((line) => line.msg === 'request' && line['path'] === '/api/me');
    expect(requestLines.filter((line) => line['status'] === 200)).to.have.length(inFlight + 1);
  });

  it('cuts off requests that outlive SHUTDOWN_TIMEOUT_MS and exits 1', async () => {
    entry = await startEntryPoint(emulator, { SHUTDOWN_TIMEOUT_MS: '300' });
    emulator.faults.injectGraph({ path: '/v1.0/me', delayMs: 10_000, times: 'always' });
    const slow = request(`${entry.baseUrl}/api/me`, { dispatcher: client, headers: { authorization: `Bearer ${emulator.mint()}` } }).then(
      async (response) => `answered ${response.statusCode}: ${await response.body.text()}`,
      () => 'cut off',
    );
    await until('the call to reach Graph', () => emulator.counters.graph >= 1, 10_000, 10);
    const signalledAt = Date.now();
    entry.child.kill('SIGTERM');
    const { code } = await entry.exited;
    expect(code).to.equal(1);
    expect(Date.now() - signalledAt).to.be.lessThan(5_000);
    expect(await slow).to.equal('cut off');
    expect(entry.logs.find((line) => line.msg === 'stopped')).to.include({ cutOff: true });
  });
});
