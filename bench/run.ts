/**
 * `npm run bench [-- options]` (defaults in brackets):
 *   --users 10,1000,100000      user counts, each its own run with fresh server processes and Redis data
 *   --rounds 3 --seconds 8      rounds, and seconds per path per round; each round runs every path once
 *   --connections 32            wrk connections (one thread)
 *   --quick                     a short run: --users 10,1000 --rounds 1 --seconds 3 unless given
 *   --profile                   after the rounds of the first user count ≥ 1,000, one more segment of the
 *                               reference and of each service token path under V8's CPU profiler (the
 *                               one --cpu-prof uses, started over the inspector so it covers only that
 *                               segment; files in bench/results/profiles/); prints the top self time
 *                               by function and by package/file, and our functions inclusive
 *   --l1-mib 384                CACHE_L1_MAX_BYTES of the L1 instances (100,000 users fit)
 *   --validation-cache-mib 192  TOKEN_VALIDATION_CACHE_MAX_BYTES of the instances with the verified-token
 *                               cache on (100,000 tokens fit, at about 1.7 KB accounted each), as the
 *                               L1 budget is sized to the users; counted in the RSS target and heap cap
 *   --base-mib 192              the fixed base of the RSS target: the service with empty caches
 *                               measures 160–185 MiB after a full GC here (Node 20, tsx loaded)
 *
 * Starts the emulator (synthetic users) and a redis-server, then per user count N five server
 * processes: the reference (bench/reference-server.ts), the floor (bench/floor-server.ts) and
 * three instances of the service (bench/server.ts): every token verified
 * (TOKEN_VALIDATION_CACHE_MAX_BYTES=0), defaults, and L1 off (CACHE_L1_MAX_BYTES=0) over Redis.
 * It fills the caches (every user once), then measures every path in interleaved rounds with
 * wrk, reading each server's CPU time over IPC before and after its segment. Writes
 * bench/results/latest.json and latest.md and prints the table and the targets.
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
import type { LoadCommand, LoadReply, WarmResult } from './load.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import {
  evaluateTargets,
  median,
  renderMarkdown,
  renderProfile,
  type BenchResults,
  type Budgets,
  type PathName,
  type PathResult,
  type UsersRun,
} from './report.js';
import type { HarnessReply, HarnessRequest, ProcessStats } from './server-harness.js';
import { mintTokens } from './tokens.js';
import { ensureWrk, runWrk, writeWrkScript, type LoadResult } from './wrk.js';

const MIB = 1024 * 1024;
const RESULTS_DIR = new URL('./results/', import.meta.url);
const KEY_PREFIX = 'obo:';

type ServerName = 'reference' | 'floor' | 'verifyEvery' | 'defaults' | 'l2Only';
/** Which server serves each path, and where. */
const PATHS: Record<PathName, { server: ServerName; path: string }> = {
  reference: { server: 'reference', path: '/token' },
  floor: { server: 'floor', path: '/token' },
  verifyEvery: { server: 'verifyEvery', path: '/bench/token' },
  defaults: { server: 'defaults', path: '/bench/token' },
  l2: { server: 'l2Only', path: '/bench/token' },
  me: { server: 'defaults', path: '/api/me' },
};
const PATH_NAMES = Object.keys(PATHS) as PathName[];
/** Counters of the servers that are sizes, not counts (no deltas). */
const GAUGES = new Set(['l1Bytes', 'l1Entries', 'tokenCacheMaxBytes', 'tokenCacheEntries', 'verifiedTokens']);

interface Settings {
  users: number[];
  seconds: number;
  rounds: number;
  connections: number;
  profile: boolean;
  budgets: Budgets;
  /** --max-old-space-size of the service's processes: the Dockerfile's rule (caches + 128 MiB). */
  serviceHeapMib: number;
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      users: { type: 'string' },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      connections: { type: 'string', default: '32' },
      quick: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'l1-mib': { type: 'string', default: '384' },
      'validation-cache-mib': { type: 'string', default: '192' },
      'base-mib': { type: 'string', default: '192' },
    },
  });
  const positive = (name: string, text: string): number => {
    const n = Number(text.replaceAll('_', ''));
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got "${text}"`);
    return n;
  };
  const quick = values.quick;
  const l1Mib = positive('l1-mib', values['l1-mib']);
  const validationMib = positive('validation-cache-mib', values['validation-cache-mib']);
  return {
    users: (values.users ?? (quick ? '10,1000' : '10,1000,100000'))
      .split(',')
      .map((u) => Math.round(positive('users', u)))
      .sort((a, b) => a - b),
    rounds: Math.round(positive('rounds', values.rounds ?? (quick ? '1' : '3'))),
    seconds: positive('seconds', values.seconds ?? (quick ? '3' : '8')),
    connections: Math.round(positive('connections', values.connections)),
    profile: values.profile,
    budgets: {
      l1MaxBytes: Math.round(l1Mib * MIB),
      validationCacheBytes: Math.round(validationMib * MIB),
      baseBytes: Math.round(positive('base-mib', values['base-mib']) * MIB),
    },
    serviceHeapMib: Math.round(l1Mib + validationMib + 128),
  };
}

/** `T` without its `id`, member by member of a union. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/** A forked TypeScript child (tsx loader) with an IPC channel of request/answer pairs. */
class Child<Request extends { id: number }> {
  readonly process: ChildProcess;
  private readonly pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void; progress?: (done: number) => void }
  >();
  private nextId = 0;
  private exitCode: number | null | undefined;

  constructor(script: string, options: { env?: NodeJS.ProcessEnv; execArgv?: string[]; stdout: 'ignore' | 'inherit' }) {
    this.process = fork(new URL(script, import.meta.url), [], {
      execArgv: ['--import', 'tsx', ...(options.execArgv ?? [])],
      env: options.env ?? process.env,
      serialization: 'advanced',
      stdio: ['ignore', options.stdout, 'inherit', 'ipc'],
    });
    this.process.on('message', (reply: HarnessReply | LoadReply | { port: number }) => {
      if (!('id' in reply)) return;
      const waiter = this.pending.get(reply.id);
      if ('progress' in reply) return waiter?.progress?.(reply.progress);
      this.pending.delete(reply.id);
      if ('error' in reply) waiter?.reject(new Error(`${script}: ${reply.error}`));
      else waiter?.resolve(reply.result);
    });
    this.process.on('exit', (code) => {
      this.exitCode = code;
      for (const waiter of this.pending.values()) waiter.reject(new Error(`${script} exited (${code}); its stderr is above`));
      this.pending.clear();
    });
  }

  call<T>(request: WithoutId<Request>, progress?: (done: number) => void): Promise<T> {
    if (this.exitCode !== undefined) return Promise.reject(new Error(`the process exited (${this.exitCode}); its stderr is above`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, ...(progress ? { progress } : {}) });
      this.process.send({ ...request, id });
    });
  }

  async stop(): Promise<void> {
    if (this.exitCode !== undefined) return;
    const exited = once(this.process, 'exit');
    this.process.send('stop');
    await exited;
  }
}

type LoadRequest = { id: number; command: LoadCommand };

class ServerProcess {
  private constructor(
    private readonly child: Child<HarnessRequest>,
    readonly baseUrl: string,
  ) {}

  static async start(script: string, env: NodeJS.ProcessEnv, execArgv: string[]): Promise<ServerProcess> {
    const child = new Child<HarnessRequest>(script, { env, execArgv: ['--expose-gc', ...execArgv], stdout: 'ignore' });
    const [message] = (await Promise.race([once(child.process, 'message'), once(child.process, 'exit').then(() => [undefined])])) as [
      { port: number } | undefined,
    ];
    if (!message) throw new Error(`${script} exited before listening (see its stderr above)`);
    return new ServerProcess(child, `http://127.0.0.1:${message.port}`);
  }

  stats(gc: boolean): Promise<ProcessStats> {
    return this.child.call({ kind: 'stats', gc });
  }

  profileStart(): Promise<void> {
    return this.child.call({ kind: 'profile-start' });
  }

  profileStop(file: string): Promise<string> {
    return this.child.call({ kind: 'profile-stop', file });
  }

  stop(): Promise<void> {
    return this.child.stop();
  }
}

interface Tools {
  emulator: Emulator;
  redis: RedisServer;
  load: Child<LoadRequest>;
  /** wrk and its script, or undefined: autocannon in the load process. */
  wrk: { bin: string; script: string } | undefined;
  tokenFile: string;
  profileDir: string;
  log: (text: string) => void;
}

async function main(): Promise<void> {
  const settings = readSettings();
  const started = performance.now();
  const loadAtStart = loadavg()[0] ?? 0;
  const log = (text: string): void =>
    void process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`);
  const wrkBin = ensureWrk(log);
  const emulator = await startEmulator({ syntheticUsers: true });
  const redis = await startRedis();
  const scratch = await mkdtemp(join(tmpdir(), 'obo-bench-'));
  const load = new Child<LoadRequest>('./load.ts', { stdout: 'inherit' });
  await mkdir(RESULTS_DIR, { recursive: true });
  const profileDir = join(RESULTS_DIR.pathname, 'profiles');
  if (settings.profile) await mkdir(profileDir, { recursive: true });
  try {
    const tools: Tools = {
      emulator,
      redis,
      load,
      wrk: wrkBin ? { bin: wrkBin, script: await writeWrkScript(scratch) } : undefined,
      tokenFile: join(scratch, 'tokens.txt'),
      profileDir,
      log,
    };
    const runs: UsersRun[] = [];
    let markdown = '';
    let minted = 0;
    for (const users of settings.users) {
      const mintSeconds = await mintTokens(emulator, tools.tokenFile, minted, users, (done) => log(`minted ${done.toLocaleString('en-US')} tokens`));
      minted = Math.max(minted, users);
      await load.call({ command: { kind: 'tokens', file: tools.tokenFile } });
      const profileHere = settings.profile && users === (settings.users.find((n) => n >= 1_000) ?? settings.users[0]);
      runs.push(await runUsers(users, mintSeconds, profileHere, settings, tools));
      // After every user count, so a long run stopped early keeps what it measured.
      markdown = await writeResults(runs, { settings, started, loadAtStart, loadTool: tools.wrk ? 'wrk' : 'autocannon' });
    }
    process.stdout.write(`\n${markdown}\nWritten to bench/results/latest.json and latest.md.\n`);
  } finally {
    await load.stop();
    await redis.stop();
    await emulator.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

async function writeResults(
  runs: UsersRun[],
  run: { settings: Settings; started: number; loadAtStart: number; loadTool: 'wrk' | 'autocannon' },
): Promise<string> {
  const { settings } = run;
  const results: BenchResults = {
    startedAt: new Date(Date.now() - (performance.now() - run.started)).toISOString(),
    totalSeconds: (performance.now() - run.started) / 1000,
    machine: {
      loadAverage: { start: run.loadAtStart, end: loadavg()[0] ?? 0 },
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 1024 ** 3),
      node: process.version,
      platform: `${process.platform}/${process.arch}`,
    },
    settings: {
      loadTool: run.loadTool,
      connections: settings.connections,
      rounds: settings.rounds,
      secondsPerSegment: settings.seconds,
      budgets: settings.budgets,
      serviceHeapMib: settings.serviceHeapMib,
    },
    runs,
    targets: evaluateTargets(runs, settings.budgets),
  };
  const markdown = renderMarkdown(results);
  await writeFile(new URL('latest.json', RESULTS_DIR), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(new URL('latest.md', RESULTS_DIR), markdown);
  return markdown;
}

async function startServers(settings: Settings, tools: Tools): Promise<Record<ServerName, ServerProcess>> {
  const { emulator, redis } = tools;
  const tenant = emulator.tenant.id;
  const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, NODE_ENV: 'production', NODE_EXTRA_CA_CERTS: emulator.caPath };
  const reference: NodeJS.ProcessEnv = {
    ...base,
    BENCH_JWKS_URL: `${emulator.authorityHost}/${tenant}/discovery/v2.0/keys`,
    BENCH_ISSUER: `https://login.microsoftonline.com/${tenant}/v2.0`,
    BENCH_AUDIENCE: emulator.api.clientId,
    BENCH_SCOPE: 'access_as_user',
  };
  // Production defaults, but no rate limits: they would throttle 10 users at thousands of req/s.
  const service: NodeJS.ProcessEnv = {
    ...base,
    ...emulatorEnvironment(emulator),
    LOG_LEVEL: 'info',
    REDIS_URL: redis.url,
    CACHE_KEY_PREFIX: KEY_PREFIX,
    CACHE_ENCRYPTION_KEYS: `bench:${randomBytes(32).toString('base64')}`,
    RATE_LIMIT_PER_MINUTE: '0',
    RATE_LIMIT_IP_PER_MINUTE: '0',
    CACHE_L1_MAX_BYTES: String(settings.budgets.l1MaxBytes),
    TOKEN_VALIDATION_CACHE_MAX_BYTES: String(settings.budgets.validationCacheBytes),
  };
  const heap = [`--max-old-space-size=${settings.serviceHeapMib}`];
  const [referenceServer, floor, verifyEvery, defaults, l2Only] = await Promise.all([
    ServerProcess.start('./reference-server.ts', reference, []),
    ServerProcess.start('./floor-server.ts', reference, []),
    ServerProcess.start('./server.ts', { ...service, TOKEN_VALIDATION_CACHE_MAX_BYTES: '0' }, heap),
    ServerProcess.start('./server.ts', service, heap),
    ServerProcess.start('./server.ts', { ...service, CACHE_L1_MAX_BYTES: '0' }, heap),
  ]);
  return { reference: referenceServer, floor, verifyEvery, defaults, l2Only };
}

async function runUsers(users: number, mintSeconds: number, profile: boolean, settings: Settings, tools: Tools): Promise<UsersRun> {
  const { emulator, redis, load, log } = tools;
  const client = redis.client();
  await client.flushall();
  client.disconnect();
  const servers = await startServers(settings, tools);
  try {
    const url = (name: PathName): string => servers[PATHS[name].server].baseUrl + PATHS[name].path;
    // Every user once, where state is kept: the defaults instance exchanges (filling L2, its L1
    // and its verified-token cache), the other instances then fill from L2 (the L1-off one its
    // verified-token cache), the floor its map.
    const fills: UsersRun['fills'] = [];
    for (const [server, name] of [
      ['defaults', 'defaults'],
      ['verifyEvery', 'verifyEvery'],
      ['l2Only', 'l2'],
      ['floor', 'floor'],
    ] as const) {
      log(`${users.toLocaleString('en-US')} users: filling ${server}`);
      const fill = await load.call<WarmResult>({ command: { kind: 'warm', url: url(name), users, concurrency: settings.connections } }, (done) =>
        log(`filled ${done.toLocaleString('en-US')} of ${users.toLocaleString('en-US')}`),
      );
      fills.push({
        server,
        seconds: fill.seconds,
        failed: fill.failed,
        ...(fill.firstFailure !== undefined ? { firstFailure: fill.firstFailure } : {}),
      });
    }
    // One unrecorded second per path, so no path pays for the JIT.
    for (const name of PATH_NAMES) await drive(url(name), users, 1, settings, tools);

    const exchangesBefore = emulator.counters.token;
    const segments = new Map<PathName, { load: LoadResult; cpuMicros: number; cache: Record<string, number> }[]>();
    for (let round = 1; round <= settings.rounds; round++) {
      log(`${users.toLocaleString('en-US')} users: round ${round} of ${settings.rounds}`);
      // Forward, then backward (ABBA): a drifting machine favours no path.
      for (const name of round % 2 === 1 ? PATH_NAMES : [...PATH_NAMES].reverse()) {
        const server = servers[PATHS[name].server];
        // A full collection first: no path pays for the garbage another one left.
        const before = await server.stats(true);
        const result = await drive(url(name), users, settings.seconds, settings, tools);
        const after = await server.stats(false);
        const cache = Object.fromEntries(Object.entries(after.counters).map(([key, value]) => [key, value - (before.counters[key] ?? 0)]));
        segments.set(name, [...(segments.get(name) ?? []), { load: result, cpuMicros: after.cpuMicros - before.cpuMicros, cache }]);
      }
    }
    const exchanges = emulator.counters.token - exchangesBefore;
    const paths = PATH_NAMES.map((name): PathResult => {
      const all = segments.get(name) ?? [];
      const requests = all.reduce((n, s) => n + s.load.requests, 0);
      const seconds = all.reduce((n, s) => n + s.load.seconds, 0);
      const cache: Record<string, number> = {};
      for (const s of all) for (const [key, value] of Object.entries(s.cache)) if (!GAUGES.has(key)) cache[key] = (cache[key] ?? 0) + value;
      return {
        name,
        requests,
        failed: all.reduce((n, s) => n + s.load.failed, 0),
        seconds,
        reqPerSec: requests / seconds,
        perRoundReqPerSec: all.map((s) => s.load.requests / s.load.seconds),
        p50Ms: median(all.map((s) => s.load.p50Ms)),
        p99Ms: median(all.map((s) => s.load.p99Ms)),
        perRoundP99Ms: all.map((s) => s.load.p99Ms),
        cpuMicrosPerRequest: all.reduce((n, s) => n + s.cpuMicros, 0) / requests,
        cache,
      };
    });
    const profiles = profile ? await profileTokenPaths(users, servers, url, settings, tools) : [];
    const [defaults, verifyEvery, l2Only, reference] = [
      await servers.defaults.stats(true),
      await servers.verifyEvery.stats(true),
      await servers.l2Only.stats(true),
      await servers.reference.stats(true),
    ];
    return {
      users,
      mintSeconds,
      fills,
      exchangesPerUser: exchanges / users,
      paths,
      memory: {
        defaultsRssBytes: defaults.rssBytes,
        defaultsHeapUsedBytes: defaults.heapUsedBytes,
        l1Entries: defaults.counters['l1Entries'] ?? Number.NaN,
        l1AccountedBytes: defaults.counters['l1Bytes'] ?? Number.NaN,
        tokenCacheEntries: defaults.counters['tokenCacheEntries'] ?? Number.NaN,
        tokenCacheMaxBytes: defaults.counters['tokenCacheMaxBytes'] ?? Number.NaN,
        verifyEveryRssBytes: verifyEvery.rssBytes,
        l2OnlyRssBytes: l2Only.rssBytes,
        referenceRssBytes: reference.rssBytes,
      },
      profiles,
    };
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()));
  }
}

/** One more segment of the reference and of each service token path, under V8's CPU profiler (not counted in the table). */
async function profileTokenPaths(
  users: number,
  servers: Record<ServerName, ServerProcess>,
  url: (name: PathName) => string,
  settings: Settings,
  tools: Tools,
): Promise<ProfileSummary[]> {
  const summaries: ProfileSummary[] = [];
  for (const name of ['reference', 'verifyEvery', 'defaults', 'l2'] as const) {
    const server = servers[PATHS[name].server];
    tools.log(`${users.toLocaleString('en-US')} users: profiling ${name}`);
    await server.stats(true);
    await server.profileStart();
    const result = await drive(url(name), users, settings.seconds, settings, tools);
    const file = await server.profileStop(join(tools.profileDir, `${name}-${users}-users.cpuprofile`));
    const summary = await summarizeProfile(file, result.requests);
    summaries.push({ ...summary, file: `bench/results/profiles/${name}-${users}-users.cpuprofile` });
    process.stderr.write(`\n${renderProfile(summaries.at(-1) as ProfileSummary).join('\n')}\n`);
  }
  return summaries;
}

function drive(url: string, users: number, seconds: number, settings: Settings, tools: Tools): Promise<LoadResult> {
  const { connections } = settings;
  return tools.wrk
    ? runWrk(tools.wrk.bin, tools.wrk.script, url, { tokenFile: tools.tokenFile, users, seconds, connections })
    : tools.load.call<LoadResult>({ command: { kind: 'http', url, users, seconds, connections } });
}

await main();
