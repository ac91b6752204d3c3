/**
 * `npm run soak [-- options]`: two API instances behind a round-robin balancer, one Redis, the
 * emulator with a realistic exchange latency, a steady load over 1,000 users, and faults on a
 * schedule. Writes test/soak/results/latest.json, latest.md and latest.svg, prints the table,
 * and exits 1 when a check fails. Options (defaults in brackets):
 *
 *   --seconds 60     length of the load (at least 30)
 *   --rate 25        requests per second, open loop (about a third of one core here)
 *   --users 1000     distinct users
 *   --single         only the single-server Redis run
 *   --cluster        only the 3-master Redis Cluster run
 *                    (neither: both runs, single server first)
 *   --latency-ms 50  the emulator's token endpoint delay
 *
 * Not part of `npm test`. See test/soak/README.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { format } from 'prettier';
import { startEmulator, type RequestLogEntry } from '../emulator/index.js';
import { freePort } from '../support/redis.js';
import { emulatorEnvironment } from '../support/service.js';
import { Balancer } from './balancer.js';
import { renderChart } from './chart.js';
import { ApiInstance } from './instances.js';
import { runLoad, warmUsers } from './load.js';
import { startRedisTarget } from './redis-target.js';
import { analyse, renderMarkdown, type RunResult, type SoakResults, type Window } from './report.js';
import { FAULT_PLAN, ENTRA_RETRY_AFTER_SECONDS, GRAPH_FAULT_PATH } from './schedule.js';

const RESULTS = new URL('./results/', import.meta.url);
const HOT_SHARE = 0.03;
/** Users whose tokens are cached before the load; the others arrive during it. */
const WARM_SHARE = 0.8;

interface Settings {
  seconds: number;
  rate: number;
  users: number;
  latencyMs: number;
  modes: ('single' | 'cluster')[];
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      rate: { type: 'string', default: '25' },
      users: { type: 'string', default: '1000' },
      'latency-ms': { type: 'string', default: '50' },
      single: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
    },
  });
  const number = (name: string, text: string, min: number): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number ≥ ${min}, got "${text}"`);
    return n;
  };
  const modes: Settings['modes'] = values.single === values.cluster ? ['single', 'cluster'] : values.single ? ['single'] : ['cluster'];
  return {
    seconds: number('seconds', values.seconds, 30),
    rate: number('rate', values.rate, 1),
    users: Math.round(number('users', values.users, 10)),
    latencyMs: number('latency-ms', values['latency-ms'], 0),
    modes,
  };
}

/** The synthetic user `index` (the emulator accepts any GUID oid with `syntheticUsers`). */
function oidOf(index: number): string {
  return `50a00000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
}

async function soak(mode: 'single' | 'cluster', settings: Settings, log: (text: string) => void): Promise<RunResult> {
  const emulator = await startEmulator({ syntheticUsers: true });
  const secrets = {
    redisPassword: randomBytes(18).toString('base64url'),
    encryptionKey: randomBytes(32).toString('base64'),
    metricsToken: randomBytes(24).toString('base64url'),
  };
  const redis = await startRedisTarget(mode, secrets.redisPassword);
  const instances: ApiInstance[] = [];
  let balancer: Balancer | undefined;
  const started = performance.now();
  const clock = (): number => (performance.now() - started) / 1000;
  try {
    const latency = { status: 200, delayMs: settings.latencyMs, times: 'always' as const };
    /** The token and Graph faults that should be active now (clear() empties every queue). */
    const applyFaults = (active: { entra429?: boolean; graph503?: boolean }): void => {
      emulator.faults.clear();
      if (active.entra429) emulator.faults.injectToken({ status: 429, retryAfter: ENTRA_RETRY_AFTER_SECONDS, times: 'always' });
      emulator.faults.injectToken(latency);
      if (active.graph503)
        emulator.faults.injectGraph({ path: GRAPH_FAULT_PATH, status: 503, code: 'serviceNotAvailable', retryAfter: 1, times: 'always' });
    };
    applyFaults({});

    log(`${mode}: minting ${settings.users} tokens`);
    const tokens = Array.from({ length: settings.users }, (_, i) => emulator.mint({ extraClaims: { oid: oidOf(i) }, lifetimeSeconds: 4 * 3600 }));
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      NODE_ENV: 'production',
      NODE_EXTRA_CA_CERTS: emulator.caPath,
      ...emulatorEnvironment(emulator),
      LOG_LEVEL: 'info',
      ...redis.env,
      CACHE_ENCRYPTION_KEYS: `soak:${secrets.encryptionKey}`,
      METRICS_TOKEN: secrets.metricsToken,
      SHUTDOWN_TIMEOUT_MS: '15000',
    };
    for (const name of ['api-a', 'api-b']) instances.push(new ApiInstance(name, await freePort(), env, secrets.metricsToken, clock));
    await Promise.all(instances.map((instance) => instance.start()));
    balancer = new Balancer(
      instances.map((i) => ({ name: i.name, port: i.port })),
      clock,
    );
    const baseUrl = await balancer.start();
    for (const instance of instances) await balancer.until(instance.name, true);
    // An instance takes no peer fill in its first second after its first sync (cache/README.md, "Peer fill").
    await sleep(1_000);
    log(`${mode}: instances ${instances.map((i) => `${i.name} pid ${i.pid} :${i.port}`).join(', ')}; balancer ${baseUrl}`);

    // Token endpoint requests, collected from the emulator's bounded request log as they happen.
    const tokenRequests = new Map<string, RequestLogEntry & { at: number }>();
    const collect = (): void => {
      const now = clock();
      for (const entry of emulator.requests()) {
        if (entry.server === 'entra' && entry.path.endsWith('/oauth2/v2.0/token') && !tokenRequests.has(entry.requestId)) {
          tokenRequests.set(entry.requestId, { ...entry, at: now - (Date.now() - Date.parse(entry.time)) / 1000 });
        }
      }
    };
    emulator.resetCounters();
    const collector = setInterval(collect, 500);
    const warmed = Math.floor(settings.users * WARM_SHARE);
    log(`${mode}: warming ${warmed} users`);
    const warm = await warmUsers(baseUrl, tokens, warmed, 4);
    log(`${mode}: warmed (${warm.failed} failed); load at ${settings.rate} req/s`);
    const loadStart = clock();
    const cpuAtStart = { instances: instances.map((i) => i.cpuSeconds()), runner: process.cpuUsage() };
    const scraper = setInterval(() => void Promise.all(instances.map((i) => i.scrape().catch(() => undefined))), 5_000);
    const windows: Window[] = [];
    let scheduleDone = false;
    const faults = runSchedule({
      settings,
      loadStart,
      clock,
      windows,
      log: (text) => log(`${mode}: ${text}`),
      redis,
      instances,
      balancer,
      applyFaults,
    }).finally(() => (scheduleDone = true));
    // The load outlasts the schedule by 3 s: the restarted instance serves for a while before the end.
    let graceUntil = Number.POSITIVE_INFINITY;
    void faults.finally(() => (graceUntil = clock() + 3));
    const keepGoing = (): boolean => !scheduleDone || clock() < graceUntil;
    const requests = await runLoad({
      baseUrl,
      tokens,
      rate: settings.rate,
      seconds: settings.seconds,
      hotShare: HOT_SHARE,
      clock,
      warmed,
      keepGoing,
    });
    await faults;
    clearInterval(scraper);
    clearInterval(collector);
    collect();
    await Promise.all(instances.map((i) => i.scrape().catch(() => undefined)));
    await sleep(1_100); // one more CPU sample of each instance
    const runnerCpu = process.cpuUsage(cpuAtStart.runner);
    const cpu = {
      instances: instances.map((i, n) => ({ instance: i.name, seconds: Math.round((i.cpuSeconds() - (cpuAtStart.instances[n] ?? 0)) * 10) / 10 })),
      runnerSeconds: Math.round((runnerCpu.user + runnerCpu.system) / 1e5) / 10,
    };
    log(`${mode}: load done, ${requests.length} requests`);
    const result = analyse({
      mode,
      settings: { seconds: settings.seconds, rate: settings.rate, users: settings.users, latencyMs: settings.latencyMs, hotShare: HOT_SHARE },
      warm: { users: warmed, failed: warm.failed, requestUsers: warm.users },
      cpu,
      redisFaultTarget: redis.faultTarget,
      loadStart,
      requests,
      windows,
      tokenRequests: [...tokenRequests.values()],
      instances,
      balancer,
      secrets: [emulator.api.clientSecret, secrets.redisPassword, secrets.encryptionKey, secrets.metricsToken],
    });
    return result;
  } finally {
    await Promise.all(instances.map((i) => i.stop()));
    for (const instance of instances)
      await writeFile(join(tmpdir(), `obo-soak-${mode}-${instance.name}.log`), `${instance.output.join('\n')}\n`, { mode: 0o600 });
    await balancer?.close();
    await redis.stop();
    await emulator.close();
  }
}

interface ScheduleContext {
  settings: Settings;
  loadStart: number;
  clock: () => number;
  windows: Window[];
  log: (text: string) => void;
  redis: Awaited<ReturnType<typeof startRedisTarget>>;
  instances: ApiInstance[];
  balancer: Balancer;
  applyFaults: (active: { entra429?: boolean; graph503?: boolean }) => void;
}

/** Runs every fault of FAULT_PLAN at its time, recording each window as it actually happened. */
async function runSchedule(context: ScheduleContext): Promise<void> {
  const { settings, loadStart, clock, windows, log, redis, instances, balancer, applyFaults } = context;
  const [restarted] = instances;
  if (!restarted) throw new Error('no instance');
  for (const fault of FAULT_PLAN) {
    const at = loadStart + fault.at * settings.seconds;
    await sleep(Math.max(0, (at - clock()) * 1000));
    const window: Window = { name: fault.name, label: fault.label, start: clock(), end: Number.NaN };
    windows.push(window);
    log(`${fault.label} at ${window.start.toFixed(1)} s`);
    switch (fault.name) {
      case 'redis-pause':
        await redis.pause();
        await sleep(5_000);
        await redis.resume();
        break;
      case 'entra-429':
        applyFaults({ entra429: true });
        await sleep(ENTRA_RETRY_AFTER_SECONDS * 1000);
        applyFaults({});
        break;
      case 'graph-503':
        applyFaults({ graph503: true });
        await sleep(5_000);
        applyFaults({});
        break;
      case 'redis-kill':
        await redis.kill();
        await sleep(3_000);
        await redis.restart();
        break;
      case 'api-restart':
        await restarted.terminate();
        window.detail = `${restarted.name} exited at ${(clock() - loadStart).toFixed(1)} s`;
        await restarted.start();
        await balancer.until(restarted.name, true);
        break;
    }
    window.end = clock();
    log(`${fault.label} over at ${window.end.toFixed(1)} s`);
  }
}

async function main(): Promise<void> {
  const settings = readSettings();
  const t0 = performance.now();
  const log = (text: string): void => void process.stderr.write(`[soak ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${text}\n`);
  const loadAtStart = loadavg()[0] ?? 0;
  const runs: RunResult[] = [];
  for (const mode of settings.modes) runs.push(await soak(mode, settings, log));
  const results: SoakResults = {
    startedAt: new Date(Date.now() - (performance.now() - t0)).toISOString(),
    machine: { cpus: cpus().length, loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 }, node: process.version },
    command: `npm run soak --${settings.modes.length === 1 ? ` --${settings.modes[0]}` : ''} --seconds ${settings.seconds} --rate ${settings.rate}`,
    runs,
  };
  await mkdir(RESULTS, { recursive: true });
  const markdown = renderMarkdown(results);
  await writeFile(new URL('latest.json', RESULTS), await format(JSON.stringify(results), { parser: 'json' }));
  await writeFile(new URL('latest.md', RESULTS), await format(markdown, { parser: 'markdown', printWidth: 150 }));
  await writeFile(new URL('latest.svg', RESULTS), renderChart(results));
  process.stdout.write(`\n${markdown}\nWritten to test/soak/results/latest.json, latest.md and latest.svg.\n`);
  const failed = runs.flatMap((run) => run.checks.filter((check) => !check.passed).map((check) => `${run.mode}: ${check.name}`));
  if (failed.length > 0) {
    process.stderr.write(`\nFailed checks:\n${failed.map((f) => `- ${f}`).join('\n')}\n`);
    process.exitCode = 1;
  }
}

await main();
