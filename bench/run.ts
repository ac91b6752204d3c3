/**
 * `npm run bench [-- options]` (defaults in brackets):
 *   --users 10,1000,100000       user counts, each its own run with fresh API instances and Redis
 *   --duration 2 --rounds 8      seconds per path per round; each round runs every path once
 *   --connections 16             autocannon connections
 *   --one-connection-seconds 1   per round, then each path and a bare Redis GET with one
 *                                connection: latency without queueing
 *   --fill-concurrency 32        concurrent first requests while filling the caches
 *   --l1-mib 384                 CACHE_L1_MAX_BYTES of the L1 instance (100,000 users fit)
 *   --api-heap-mib N             --max-old-space-size of the API processes [L1 MiB + 128, as
 *                                docs/deployment.md recommends; 0 = V8's own sizing]
 *   --profile                    CPU profiles of the API processes in bench/results/profiles/
 *
 * Starts the emulator (synthetic users) and a redis-server here, then for each user count N:
 * two API instances in child processes sharing that Redis (bench/server.ts: one with L1, one
 * with CACHE_L1_MAX_BYTES=0), a fill of every user's cache entry through the token path, and
 * the measured paths, interleaved round by round, driven by the load process (bench/load.ts).
 * Writes bench/results/latest.json and latest.md and prints the table and the targets.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEmulator, type Emulator } from '../test/emulator/index.js';
import { startRedis, type RedisServer } from '../test/support/redis.js';
import { emulatorEnvironment } from '../test/support/service.js';
import type { HttpResult, LoadCommand, LoadReply, RedisResult, WarmResult } from './load.js';
import { evaluateTargets, percentiles, renderMarkdown, type BenchResults, type PhaseName, type PhaseResult, type UsersRun } from './report.js';
import type { AcquireCost, InstanceStats } from './server.js';
import { mintToken, mintTokens } from './tokens.js';

const MIB = 1024 * 1024;
const RESULTS_DIR = new URL('./results/', import.meta.url);
const KEY_PREFIX = 'obo:';
/** Which instance serves each path, and where. */
const PATHS: Record<PhaseName, { instance: keyof Instances; path: string }> = {
  ceiling: { instance: 'l1', path: '/bench/ceiling' },
  l1: { instance: 'l1', path: '/bench/token' },
  l2: { instance: 'l1Off', path: '/bench/token' },
  me: { instance: 'l1', path: '/api/me' },
};
const PHASES = Object.keys(PATHS) as PhaseName[];

interface Settings {
  users: number[];
  seconds: number;
  rounds: number;
  connections: number;
  oneConnectionSeconds: number;
  fillConcurrency: number;
  l1MaxBytes: number;
  /** --max-old-space-size for the API processes; undefined = V8's own sizing. */
  apiHeapMib: number | undefined;
  profile: boolean;
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      users: { type: 'string', default: '10,1000,100000' },
      duration: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '16' },
      'one-connection-seconds': { type: 'string', default: '1' },
      'fill-concurrency': { type: 'string', default: '32' },
      // Sized so 100,000 users fit in L1 (about 3.2 KB accounted each); the target is RSS ≤ this + base.
      'l1-mib': { type: 'string', default: '384' },
      'api-heap-mib': { type: 'string' },
      profile: { type: 'boolean', default: false },
    },
  });
  const positive = (name: string, text: string): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got "${text}"`);
    return n;
  };
  return {
    users: values.users
      .split(',')
      .map((u) => Math.round(positive('users', u.replaceAll('_', ''))))
      .sort((a, b) => a - b),
    seconds: positive('duration', values.duration),
    rounds: Math.round(positive('rounds', values.rounds)),
    connections: Math.round(positive('connections', values.connections)),
    oneConnectionSeconds: positive('one-connection-seconds', values['one-connection-seconds']),
    fillConcurrency: Math.round(positive('fill-concurrency', values['fill-concurrency'])),
    l1MaxBytes: Math.round(positive('l1-mib', values['l1-mib']) * MIB),
    apiHeapMib: apiHeapMib(values['api-heap-mib'], positive('l1-mib', values['l1-mib'])),
    profile: values.profile,
  };
}

/** Left to itself, V8 lets the heap grow far past the live data (a full L1 plus its garbage). */
function apiHeapMib(flag: string | undefined, l1Mib: number): number | undefined {
  if (flag === undefined) return Math.round(l1Mib) + 128;
  const mib = Number(flag);
  if (!Number.isInteger(mib) || mib < 0) throw new Error(`--api-heap-mib: expected a whole number of MiB (0 = V8's own sizing), got "${flag}"`);
  return mib === 0 ? undefined : mib;
}

/** A forked TypeScript child (tsx loader), with its IPC channel. */
function forkScript(script: string, options: { env?: NodeJS.ProcessEnv; execArgv?: string[]; stdout: 'ignore' | 'inherit' }): ChildProcess {
  return fork(new URL(script, import.meta.url), [], {
    execArgv: ['--import', 'tsx', ...(options.execArgv ?? [])],
    env: options.env ?? process.env,
    serialization: 'advanced',
    stdio: ['ignore', options.stdout, 'inherit', 'ipc'],
  });
}

class LoadProcess {
  private readonly child = forkScript('./load.ts', { stdout: 'inherit' });
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; progress?: (done: number) => void }>();
  private nextId = 0;

  constructor() {
    this.child.on('message', (reply: LoadReply) => {
      const waiter = this.pending.get(reply.id);
      if ('progress' in reply) return waiter?.progress?.(reply.progress);
      this.pending.delete(reply.id);
      if ('error' in reply) waiter?.reject(new Error(`load process: ${reply.error}`));
      else waiter?.resolve(reply.result);
    });
    this.child.on('exit', (code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`load process exited (${code})`));
      this.pending.clear();
    });
  }

  call<T>(command: LoadCommand, progress?: (done: number) => void): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, ...(progress ? { progress } : {}) });
      this.child.send({ id, command });
    });
  }

  stop(): void {
    this.child.disconnect();
  }
}

class ApiInstance {
  private readonly exited: Promise<unknown>;
  private exitCode: number | null | undefined;

  private constructor(
    private readonly child: ChildProcess,
    readonly baseUrl: string,
  ) {
    this.exited = once(child, 'exit').then(([code]) => (this.exitCode = code as number | null));
  }

  static async start(env: NodeJS.ProcessEnv, settings: Settings, profileDir: string | undefined): Promise<ApiInstance> {
    const execArgv = [
      '--expose-gc',
      ...(settings.apiHeapMib ? [`--max-old-space-size=${settings.apiHeapMib}`] : []),
      ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
    ];
    const child = forkScript('./server.ts', { env, execArgv, stdout: 'ignore' });
    const [message] = (await Promise.race([once(child, 'message'), once(child, 'exit').then(() => [undefined])])) as [{ port: number } | undefined];
    if (!message) throw new Error('an API instance exited before listening (see its stderr above)');
    return new ApiInstance(child, `http://127.0.0.1:${message.port}`);
  }

  /** `gc`: after a full garbage collection. */
  async stats(gc = false): Promise<InstanceStats> {
    if (this.exitCode !== undefined) throw new Error(`the API instance at ${this.baseUrl} died (exit code ${this.exitCode}); its stderr is above`);
    const response = await fetch(`${this.baseUrl}/bench/stats${gc ? '?gc' : ''}`);
    return (await response.json()) as InstanceStats;
  }

  /** `count` sequential acquisitions of `token`'s Graph token, timed inside the API process. */
  async acquireCost(token: string, count: number): Promise<AcquireCost> {
    const response = await fetch(`${this.baseUrl}/bench/acquire-cost?n=${count}`, { headers: { authorization: `Bearer ${token}` } });
    if (!response.ok) throw new Error(`/bench/acquire-cost answered ${response.status}`);
    return (await response.json()) as AcquireCost;
  }

  async stop(): Promise<void> {
    if (this.exitCode === undefined) this.child.send('stop');
    await this.exited;
  }
}

interface Instances {
  l1: ApiInstance;
  l1Off: ApiInstance;
}

interface Accumulated {
  ok: number;
  failed: number;
  seconds: number;
  latencies: Float64Array[];
  perRound: number[];
  exchanges: number;
  cpuMicros: number;
  cache: InstanceStats['cache'];
  rssBytes: number;
}

async function main(): Promise<void> {
  const settings = readSettings();
  const started = performance.now();
  // Other work on the machine skews every number: recorded with the results.
  const loadAtStart = loadavg()[0] ?? 0;
  const log = (text: string): void => void process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`);
  const emulator = await startEmulator({ syntheticUsers: true });
  const redis = await startRedis();
  const scratch = await mkdtemp(join(tmpdir(), 'obo-bench-'));
  const load = new LoadProcess();
  await mkdir(RESULTS_DIR, { recursive: true });
  const profileDir = settings.profile ? join(RESULTS_DIR.pathname, 'profiles') : undefined;
  try {
    const runs: UsersRun[] = [];
    const tokenFile = join(scratch, 'tokens.txt');
    let minted = 0;
    for (const users of settings.users) {
      const mintSeconds = await mintTokens(emulator, tokenFile, minted, users, (done) => log(`minted ${done.toLocaleString('en-US')} tokens`));
      minted = Math.max(minted, users);
      await load.call({ kind: 'tokens', file: tokenFile });
      runs.push(await runUsers(users, { settings, emulator, redis, load, mintSeconds, profileDir, log }));
    }
    const results: BenchResults = {
      startedAt: new Date(Date.now() - (performance.now() - started)).toISOString(),
      totalSeconds: (performance.now() - started) / 1000,
      machine: {
        loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 },
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
        memoryGiB: Math.round(totalmem() / 1024 ** 3),
        node: process.version,
        platform: `${process.platform}/${process.arch}`,
      },
      settings: {
        secondsPerPhase: settings.seconds,
        rounds: settings.rounds,
        connections: settings.connections,
        oneConnectionSeconds: settings.oneConnectionSeconds,
        fillConcurrency: settings.fillConcurrency,
        l1MaxBytes: settings.l1MaxBytes,
        apiHeapMib: settings.apiHeapMib ?? null,
        logLevel: 'info',
      },
      runs,
      targets: evaluateTargets(runs, settings.l1MaxBytes),
    };
    const markdown = renderMarkdown(results);
    await writeFile(new URL('latest.json', RESULTS_DIR), `${JSON.stringify(results, null, 2)}\n`);
    await writeFile(new URL('latest.md', RESULTS_DIR), markdown);
    process.stdout.write(`\n${markdown}\nWritten to bench/results/latest.json and latest.md.\n`);
  } finally {
    load.stop();
    await redis.stop();
    await emulator.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

interface RunContext {
  settings: Settings;
  emulator: Emulator;
  redis: RedisServer;
  load: LoadProcess;
  mintSeconds: number;
  profileDir: string | undefined;
  log: (text: string) => void;
}

async function runUsers(users: number, context: RunContext): Promise<UsersRun> {
  const { settings, emulator, redis } = context;
  const client = redis.client();
  await client.flushall();
  client.disconnect();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    NODE_EXTRA_CA_CERTS: emulator.caPath,
    ...emulatorEnvironment(emulator),
    LOG_LEVEL: 'info',
    REDIS_URL: redis.url,
    CACHE_KEY_PREFIX: KEY_PREFIX,
    CACHE_ENCRYPTION_KEYS: `bench:${randomBytes(32).toString('base64')}`,
    RATE_LIMIT_PER_MINUTE: '0',
    RATE_LIMIT_IP_PER_MINUTE: '0',
  };
  const instances: Instances = {
    l1: await ApiInstance.start({ ...env, CACHE_L1_MAX_BYTES: String(settings.l1MaxBytes) }, settings, context.profileDir),
    l1Off: await ApiInstance.start({ ...env, CACHE_L1_MAX_BYTES: '0' }, settings, context.profileDir),
  };
  try {
    const fill = await fillCaches(users, instances.l1, context);
    const { phases, redisGet } = await measureRounds(users, instances, context);
    const [l1Stats, l1OffStats] = [await instances.l1.stats(), await instances.l1Off.stats()];
    const l1AfterGc = await instances.l1.stats(true);
    // Last, as it makes one more exchange: the acquisition alone, timed inside each API process.
    const token = mintToken(emulator, 0);
    const lookup = { l1Hit: await instances.l1.acquireCost(token, 20_000), l2Hit: await instances.l1Off.acquireCost(token, 2_000) };
    const peakRss = (instance: keyof Instances, last: number): number =>
      Math.max(last, ...phases.filter((p) => PATHS[p.name].instance === instance).map((p) => p.apiRssBytes));
    return {
      users,
      mintSeconds: context.mintSeconds,
      fill,
      phases,
      redisGet,
      lookup,
      memory: {
        l1InstanceRssBytes: peakRss('l1', l1Stats.rssBytes),
        l1InstanceAfterGc: { rssBytes: l1AfterGc.rssBytes, heapUsedBytes: l1AfterGc.heapUsedBytes },
        l1OffInstanceRssBytes: peakRss('l1Off', l1OffStats.rssBytes),
        l1AccountedBytes: l1Stats.l1Bytes,
        l1Entries: l1Stats.l1Entries,
      },
    };
  } finally {
    await Promise.all([instances.l1.stop(), instances.l1Off.stop()]);
  }
}

/** Every user's first request through the token path: one exchange each, filling L1 and L2. */
async function fillCaches(users: number, instance: ApiInstance, context: RunContext): Promise<UsersRun['fill']> {
  const { emulator, load, log } = context;
  log(`${users.toLocaleString('en-US')} users: filling the caches (one exchange per user)`);
  const before = { exchanges: emulator.counters.token, api: await instance.stats(), emulatorCpu: process.cpuUsage() };
  const fill = await load.call<WarmResult>(
    { kind: 'warm', url: `${instance.baseUrl}/bench/token`, users, concurrency: context.settings.fillConcurrency },
    (done) => log(`filled ${done.toLocaleString('en-US')} of ${users.toLocaleString('en-US')}`),
  );
  const emulatorCpu = process.cpuUsage(before.emulatorCpu);
  const exchanges = emulator.counters.token - before.exchanges;
  log(`filled in ${fill.seconds.toFixed(1)} s (${fill.failed} failed)`);
  return {
    seconds: fill.seconds,
    exchangesPerUser: exchanges / users,
    failed: fill.failed,
    ...(fill.firstFailure !== undefined ? { firstFailure: fill.firstFailure } : {}),
    apiCpuMsPerExchange: ((await instance.stats()).cpuMicros - before.api.cpuMicros) / 1000 / exchanges,
    emulatorCpuMsPerExchange: (emulatorCpu.user + emulatorCpu.system) / 1000 / exchanges,
  };
}

/**
 * Rounds of every path under load, then every path and a bare Redis GET with one connection.
 * Rounds run forward, then backward (ABBA): a drifting machine favours no path, and the pairs
 * compared (ceiling and L1, L1 and L2, L2 and the bare GET) always run back to back. Each
 * segment under load starts after a full garbage collection in the instance it measures.
 */
async function measureRounds(users: number, instances: Instances, context: RunContext): Promise<{ phases: PhaseResult[]; redisGet: UsersRun['redisGet'] }> {
  const { settings, emulator, load, log } = context;
  const url = (name: PhaseName): string => instances[PATHS[name].instance].baseUrl + PATHS[name].path;
  // One unrecorded second per path first, so no path pays for the JIT.
  for (const name of PHASES) await load.call<HttpResult>({ kind: 'http', url: url(name), users, seconds: 1, connections: settings.connections });

  const totals = new Map<PhaseName, Accumulated>();
  const oneConnection = new Map<PhaseName, Float64Array[]>();
  const redisGets: Float64Array[] = [];
  let redisKeys = 0;
  for (let round = 1; round <= settings.rounds; round++) {
    log(`${users.toLocaleString('en-US')} users: round ${round} of ${settings.rounds}`);
    const order = round % 2 === 1 ? PHASES : [...PHASES].reverse();
    for (const name of order) {
      const instance = instances[PATHS[name].instance];
      // A full collection first: no path pays for the garbage another one left (GET /api/me leaves most).
      const before = { stats: await instance.stats(true), exchanges: emulator.counters.token };
      const result = await load.call<HttpResult>({ kind: 'http', url: url(name), users, seconds: settings.seconds, connections: settings.connections });
      accumulate(totals, name, result, before, { stats: await instance.stats(), exchanges: emulator.counters.token });
    }
    for (const name of order) {
      const single = await load.call<HttpResult>({ kind: 'http', url: url(name), users, seconds: settings.oneConnectionSeconds, connections: 1 });
      oneConnection.set(name, [...(oneConnection.get(name) ?? []), single.latenciesMs]);
    }
    const gets = await load.call<RedisResult>({ kind: 'redis', url: context.redis.url, keyPrefix: KEY_PREFIX, seconds: settings.oneConnectionSeconds });
    redisGets.push(gets.latenciesMs);
    redisKeys = gets.keys;
  }

  const phases = PHASES.flatMap((name): PhaseResult[] => {
    const total = totals.get(name);
    if (!total) return [];
    const loaded = percentiles(concat(total.latencies));
    const single = percentiles(concat(oneConnection.get(name) ?? []));
    return [
      {
        name,
        requests: total.ok,
        failed: total.failed,
        reqPerSec: total.ok / total.seconds,
        perRoundReqPerSec: total.perRound,
        p50Ms: loaded.p50,
        p99Ms: loaded.p99,
        oneConnectionP50Ms: single.p50,
        oneConnectionP99Ms: single.p99,
        exchangesPerUser: total.exchanges / users,
        apiCpuPercent: (total.cpuMicros / 1e6 / total.seconds) * 100,
        cache: total.cache,
        apiRssBytes: total.rssBytes,
      },
    ];
  });
  const redis = percentiles(concat(redisGets));
  return { phases, redisGet: { p50Ms: redis.p50, p99Ms: redis.p99, keys: redisKeys } };
}

function accumulate(
  totals: Map<PhaseName, Accumulated>,
  name: PhaseName,
  result: HttpResult,
  before: { stats: InstanceStats; exchanges: number },
  after: { stats: InstanceStats; exchanges: number },
): void {
  const total = totals.get(name) ?? {
    ok: 0,
    failed: 0,
    seconds: 0,
    latencies: [],
    perRound: [],
    exchanges: 0,
    cpuMicros: 0,
    cache: { l1Hits: 0, l2Hits: 0, joins: 0, misses: 0, l2Errors: 0 },
    rssBytes: 0,
  };
  total.ok += result.ok;
  total.failed += result.failed;
  total.seconds += result.seconds;
  total.latencies.push(result.latenciesMs);
  total.perRound.push(result.ok / result.seconds);
  total.exchanges += after.exchanges - before.exchanges;
  total.cpuMicros += after.stats.cpuMicros - before.stats.cpuMicros;
  for (const counter of Object.keys(total.cache) as (keyof InstanceStats['cache'])[]) {
    total.cache[counter] += after.stats.cache[counter] - before.stats.cache[counter];
  }
  total.rssBytes = Math.max(total.rssBytes, after.stats.rssBytes);
  totals.set(name, total);
}

function concat(arrays: Float64Array[]): Float64Array {
  const all = new Float64Array(arrays.reduce((n, a) => n + a.length, 0));
  let offset = 0;
  for (const array of arrays) {
    all.set(array, offset);
    offset += array.length;
  }
  return all;
}

await main();
