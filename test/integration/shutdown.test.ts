import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { Agent, Client, request, type Dispatcher } from 'undici';
import type { Environment } from '../../api/config/load-config.js';
import type { Emulator } from '../emulator/index.js';
import { useEmulator, useRedis } from '../support/fixtures.js';
import { loadContract } from '../support/openapi-contract.js';
import { emulatorEnvironment } from '../support/service.js';
import { until } from '../support/wait.js';

interface EntryPoint {
  child: ChildProcess;
  baseUrl: string;
  /** Log lines so far, parsed. */
  logs: { msg: string; [field: string]: unknown }[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(msg: string): Promise<void>;
  /** What it wrote to stderr so far. */
  stderr(): string;
}

const DRAINING = 'draining: /readyz answers 503; still serving, and every response closes its connection';
const STOPPING = 'stopping: no new connections; finishing requests in flight';

/** `api/main.ts` in a process of its own, configured only through its environment, as a user starts it. */
async function startEntryPoint(emulator: Emulator, env: Environment): Promise<EntryPoint> {
  const entry = spawnEntryPoint(emulator, env);
  await entry.waitForLog('listening');
  return entry;
}

function spawnEntryPoint(emulator: Emulator, env: Environment): EntryPoint {
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
  createInterface({ input: child.stdout }).on('line', (line) => {
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
  return {
    child,
    // Read once listening (the port is 0 until then).
    get baseUrl() {
      return `http://127.0.0.1:${String(logs.find((line) => line.msg === 'listening')?.['port'])}`;
    },
    logs,
    exited,
    waitForLog,
    stderr: () => stderr,
  };
}

interface Answer {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: string;
}

async function get(dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await request(url, { dispatcher, headers });
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() };
}

/** A GET on a connection of its own, opened now. */
async function getOnNewConnection(baseUrl: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const fresh = new Client(baseUrl);
  try {
    return await get(fresh, `${baseUrl}${path}`, headers);
  } finally {
    await fresh.destroy();
  }
}

function connectError(baseUrl: string): Promise<string | undefined> {
  const agent = new Agent();
  return request(`${baseUrl}/healthz`, { dispatcher: agent })
    .then(
      async (response) => `answered ${response.statusCode}: ${await response.body.text()}`,
      (error: { code?: string }) => error.code,
    )
    .finally(() => agent.destroy());
}

/** When a log line was written (pino's epoch milliseconds). */
function loggedAt(entry: EntryPoint, msg: string): number {
  return Number(entry.logs.find((line) => line.msg === msg)?.['time']);
}

describe('graceful shutdown of the real entry point (SIGTERM)', function () {
  this.timeout(60_000);
  const emulator = useEmulator();
  const redis = useRedis();
  let client: Agent;
  let entry: EntryPoint | undefined;
  const contract = loadContract();

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

  it('without a drain (SHUTDOWN_DRAIN_MS=0): finishes every request in flight, refuses new connections, closes Redis and the pools, and exits 0', async () => {
    entry = await startEntryPoint(emulator, {
      REDIS_URL: redis.url,
      CACHE_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
      SHUTDOWN_DRAIN_MS: '0',
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
    await entry.waitForLog(STOPPING);

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
    entry = await startEntryPoint(emulator, { SHUTDOWN_DRAIN_MS: '0', SHUTDOWN_TIMEOUT_MS: '300' });
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
  it('drains on SIGTERM: /readyz 503 at once, new and kept-alive connections still served with Connection: close, then refuses and exits 0', async () => {
    const drainMs = 2_000;
    entry = await startEntryPoint(emulator, { SHUTDOWN_DRAIN_MS: String(drainMs), SHUTDOWN_TIMEOUT_MS: '5000' });
    const { baseUrl } = entry;
    const token = emulator.mint({ user: 'alice' });
    // One keep-alive connection, opened before SIGTERM, as a balancer's pool holds it.
    const kept = new Client(baseUrl, { keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
    const keptEvents = { connects: 0, disconnects: 0 };
    kept.on('connect', () => (keptEvents.connects += 1));
    kept.on('disconnect', () => (keptEvents.disconnects += 1));
    try {
      await until('/readyz 200', async () => (await get(kept, `${baseUrl}/readyz`)).status === 200, 10_000, 50);
      // Warm: the token is cached, so the call during the drain is quick.
      expect((await get(kept, `${baseUrl}/api/me`, { authorization: `Bearer ${token}` })).status).to.equal(200);
      expect(keptEvents, 'one connection, idle now').to.deep.equal({ connects: 1, disconnects: 0 });

      entry.child.kill('SIGTERM');
      await entry.waitForLog(DRAINING);
      const [readyz, healthz, me] = await Promise.all([
        getOnNewConnection(baseUrl, '/readyz'),
        getOnNewConnection(baseUrl, '/healthz'),
        getOnNewConnection(baseUrl, '/api/me', { authorization: `Bearer ${token}` }),
      ]);
      expect(readyz.status, '/readyz during the drain').to.equal(503);
      const readiness = JSON.parse(readyz.body) as { status?: string; draining?: boolean; checks?: Record<string, string> };
      expect(readiness).to.deep.include({ status: 'unavailable', draining: true });
      expect(readiness.checks, 'the checks still say what they saw').to.include({ authorityMetadata: 'up', cacheL1: 'up' });
      expect(
        contract.check({ method: 'GET', path: '/readyz', status: readyz.status, headers: readyz.headers, body: Buffer.from(readyz.body) }),
      ).to.deep.equal([]);
      expect({ status: healthz.status, body: JSON.parse(healthz.body) as unknown }, 'liveness during the drain').to.deep.equal({
        status: 200,
        body: { status: 'ok' },
      });
      expect(me.status, 'a new connection during the drain is served').to.equal(200);
      expect((JSON.parse(me.body) as { id?: string }).id).to.equal(emulator.users.alice.oid);
      for (const answer of [readyz, healthz, me]) expect(answer.headers['connection']).to.equal('close');

      // The idle keep-alive connection was not reset: a request on it gets a whole answer, its last.
      expect(keptEvents.disconnects, 'the kept connection closed during the drain').to.equal(0);
      const onKept = await get(kept, `${baseUrl}/api/me`, { authorization: `Bearer ${token}` });
      expect({ status: onKept.status, connection: onKept.headers['connection'], id: (JSON.parse(onKept.body) as { id?: string }).id }).to.deep.equal({
        status: 200,
        connection: 'close',
        id: emulator.users.alice.oid,
      });
      expect(keptEvents.connects, 'served on the connection opened before SIGTERM').to.equal(1);
      expect(
        entry.logs.map((line) => line.msg),
        'all of the above happened within the drain',
      ).not.to.include(STOPPING);

      await entry.waitForLog(STOPPING);
      expect(await connectError(baseUrl), 'a new connection after the drain').to.equal('ECONNREFUSED');
      const { code, signal } = await entry.exited;
      expect({ code, signal }).to.deep.equal({ code: 0, signal: null });
      expect(loggedAt(entry, STOPPING) - loggedAt(entry, DRAINING), 'the drain lasted SHUTDOWN_DRAIN_MS').to.be.at.least(drainMs - 10);
      expect(entry.logs.find((line) => line.msg === 'stopped')).to.include({ cutOff: false });
      expect(entry.logs.map((line) => line.msg)).not.to.include('something still holds the event loop after stopping; exiting anyway');
    } finally {
      await kept.destroy();
    }
  });

  it('a second SIGTERM ends the drain early', async () => {
    entry = await startEntryPoint(emulator, { SHUTDOWN_DRAIN_MS: '30000' });
    const { baseUrl } = entry;
    await until('/readyz 200', async () => (await getOnNewConnection(baseUrl, '/readyz')).status === 200, 10_000, 50);
    entry.child.kill('SIGTERM');
    await entry.waitForLog(DRAINING);
    expect((await getOnNewConnection(baseUrl, '/readyz')).status, 'draining').to.equal(503);
    const secondAt = Date.now();
    entry.child.kill('SIGTERM');
    const { code, signal } = await entry.exited;
    expect({ code, signal }).to.deep.equal({ code: 0, signal: null });
    expect(Date.now() - secondAt, 'exit after the second signal, not after 30 s').to.be.lessThan(5_000);
    expect(entry.logs.map((line) => line.msg)).to.include.members(['second signal: ending the drain early', STOPPING, 'stopped']);
  });

  it('refuses to start with a SHUTDOWN_DRAIN_MS that is not a whole number of milliseconds, naming it', async () => {
    const values = ['-1', '5s', '1.5'];
    const outcomes = await Promise.all(
      values.map(async (value) => {
        const started = spawnEntryPoint(emulator, { SHUTDOWN_DRAIN_MS: value });
        const outcome = await Promise.race([started.exited, started.waitForLog('listening').then(() => 'listening' as const)]);
        if (outcome === 'listening') started.child.kill('SIGKILL');
        return { value, outcome, named: started.stderr().includes(`SHUTDOWN_DRAIN_MS: expected a whole number from 0 to 600000, got "${value}"`) };
      }),
    );
    expect(outcomes).to.deep.equal(values.map((value) => ({ value, outcome: { code: 1, signal: null }, named: true })));
  });
});
