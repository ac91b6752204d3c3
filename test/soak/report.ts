/**
 * What a soak run means: every request classified (documented failure or not), the exchanges
 * against their bound, cache shares, latency per phase, RSS, the balancer's view, the secret
 * scan, and the four checks. Also the Markdown of the results.
 *
 * "A user without a cached token" (the one documented Entra-throttle failure): a user the fleet
 * cannot have cached, i.e. with no earlier success outside a Redis outage (a success during a
 * pause or a kill, or within REDIS_SETTLE_SECONDS after one, may have reached only the L1 of the
 * instance that served it). Redis keeps its data across the kill (AOF), so nothing else loses
 * a cached token.
 */
import { JWT_SHAPED } from '../support/log-scan.js';
import type { Balancer, BalancerEvent, ConnectionError } from './balancer.js';
import type { ApiInstance, CacheCounters } from './instances.js';
import { HOT_USER, type SoakRequest } from './load.js';
import { ENTRA_RETRY_AFTER_SECONDS, REDIS_SETTLE_SECONDS, type FaultName } from './schedule.js';

export interface Window {
  name: FaultName;
  label: string;
  /** Seconds since the soak's clock started. */
  start: number;
  end: number;
  detail?: string;
}

interface Check {
  name: string;
  passed: boolean;
  detail: string;
}

interface Phase {
  phase: string;
  requests: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
}

/** One second of the run, by the time the requests were sent. */
interface Second {
  t: number;
  sent: number;
  ok: number;
  documented: number;
  undocumented: number;
  p99Ms: number;
}

export interface RunResult {
  mode: 'single' | 'cluster';
  settings: { seconds: number; rate: number; users: number; latencyMs: number; hotShare: number };
  redisFaultTarget: string;
  /** Fault windows, seconds since the load started. */
  windows: Window[];
  requests: number;
  /** The load ran this long: --seconds, or longer when the fault schedule had not finished. */
  loadSeconds: number;
  achievedRate: number;
  byStatus: Record<string, number>;
  failuresByCause: { cause: string; count: number; documented: boolean }[];
  exchanges: {
    tokenRequests: number;
    ok: number;
    entra429: number;
    otherErrors: number;
    distinctUsers: number;
    refreshes: number;
    forced: number;
    bound: number;
    /** Users by how many exchanges their requests made (from the instances' request log). */
    perUser: Record<string, number>;
    /** Exchanges by the restarted instance for users the fleet already had cached. */
    coldAfterRestart: number;
    /** Exchanges (request log) for users the fleet had cached, by when: during a Redis outage, the restart, or otherwise. */
    againForCachedUsers: Record<string, number>;
    /**
     * Every token issued beyond a user's first (request log), by why the earlier one could not
     * serve: see EXTRA_CAUSES. `unexplained` is what the service should not have done.
     */
    extraByCause: Record<ExtraCause, number>;
  };
  shares: {
    l1: number;
    l2: number;
    joined: number;
    exchange: number;
    counters: CacheCounters;
    /** The same answers as the request log lines' `cache` field counts them (requests of the soak only). */
    fromLogs: { l1: number; l2: number; joined: number; exchange: number };
  };
  phases: Phase[];
  rss: { instance: string; startMib: number; maxMib: number; endMib: number; samples: [number, number][] }[];
  balancer: {
    events: BalancerEvent[];
    connectionErrors: ConnectionError[];
    errorsByCause: Record<string, number>;
    retriesByCause: Record<string, number>;
    failOpen: number;
  };
  secretScan: { lines: number; findings: string[] };
  cpu: { instances: { instance: string; seconds: number }[]; runnerSeconds: number };
  timeline: Second[];
  checks: Check[];
}

export interface SoakResults {
  startedAt: string;
  machine: { cpus: number; loadAverage: { start: number; end: number }; node: string };
  command: string;
  runs: RunResult[];
}

interface AnalyseInput {
  mode: RunResult['mode'];
  settings: RunResult['settings'];
  /** Users 0 … users - 1 were warmed before the load; requestUsers maps those requests' ids to users. */
  warm: { users: number; failed: number; requestUsers: Map<string, number> };
  redisFaultTarget: string;
  /** CPU seconds over the load: each instance's (every lifetime) and the runner's (emulator, balancer, load). */
  cpu: RunResult['cpu'];
  loadStart: number;
  requests: SoakRequest[];
  windows: Window[];
  tokenRequests: { at: number; status: number; grantType?: string }[];
  instances: ApiInstance[];
  balancer: Balancer;
  secrets: string[];
}

const OBO_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/**
 * Why a user's token was issued again. Both named causes need a Redis outage: with Redis
 * unreachable no entry can reach Redis or another instance, and after the kill the subscriber's
 * gap makes every instance drop its L1, but for the entries it created itself that no invalidation
 * marker refers to (cache/README.md, "No lost invalidations", "Entries created during a gap").
 */
const EXTRA_CAUSES = {
  'same outage, other instance':
    'the earlier token was issued by the other instance during the same Redis outage (or its settle time): it was only in that L1',
  'issued in the kill, not in Redis yet':
    'the earlier token was issued while Redis was down (killed), so it never reached Redis, and the next request found it neither there nor in L1: asked of the other instance before the write-back (on a Cluster, an L2 circuit breaker opened by timeouts to the killed master stays open 5 s, past the settle time), or was dropped at a resync (its marker check did not answer, or found a marker: obo_cache_resync_created_total{result="dropped"})',
  unexplained: 'neither: the earlier token should have served',
} as const;
type ExtraCause = keyof typeof EXTRA_CAUSES;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;

export function analyse(input: AnalyseInput): RunResult {
  const { requests, loadStart, instances, balancer } = input;
  const rel = (t: number): number => round(t - loadStart, 2);
  const windows = input.windows.map((w) => ({ ...w, start: rel(w.start), end: rel(w.end) }));
  const reqs = requests.map((r) => ({ ...r, at: r.at - loadStart }));
  const window = (name: FaultName): Window | undefined => windows.find((w) => w.name === name);

  // When each user's token was certainly in the fleet's cache (L2): its first success outside a Redis outage.
  const outages = windows.filter((w) => w.name === 'redis-pause' || w.name === 'redis-kill');
  const inOutage = (t: number): boolean => outages.some((w) => t >= w.start && t <= w.end + REDIS_SETTLE_SECONDS);
  const cachedSince = new Map<number, number>();
  if (input.warm.failed === 0) for (let user = 0; user < input.warm.users; user++) cachedSince.set(user, -1);
  for (const r of [...reqs].sort((a, b) => a.at + a.ms - (b.at + b.ms))) {
    const done = r.at + r.ms / 1000;
    if (r.status === 200 && !cachedSince.has(r.user) && !inOutage(done)) cachedSince.set(r.user, done);
  }
  const cachedAt = (user: number, t: number): boolean => (cachedSince.get(user) ?? Number.POSITIVE_INFINITY) < t;

  const throttle = window('entra-429');
  const graph = window('graph-503');
  const restart = window('api-restart');
  const documented = (r: (typeof reqs)[number]): boolean => {
    // By the time of the answer: a request sent earlier may reach the exchange only in the window.
    const done = r.at + r.ms / 1000;
    if (r.status === 503 && r.error === 'temporarily_unavailable' && throttle) {
      return done >= throttle.start && done <= throttle.end + ENTRA_RETRY_AFTER_SECONDS + 1 && !cachedAt(r.user, r.at);
    }
    // Graph's 503 (Retry-After 1) is retried twice by the service before it is relayed.
    if (r.status === 503 && r.error?.startsWith('graph:') && graph) return r.user === HOT_USER && done >= graph.start && done <= graph.end + 4;
    return false;
  };

  const byStatus: Record<string, number> = {};
  const causes = new Map<string, { count: number; documented: boolean }>();
  for (const r of reqs) {
    const status = r.status === 0 ? 'no response' : String(r.status);
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    if (r.status === 200) continue;
    const isDocumented = documented(r);
    const cause = `${status} ${r.error ?? ''}${isDocumented ? '' : describeContext(r, windows)}`.trim();
    const entry = causes.get(`${isDocumented}|${cause}`) ?? { count: 0, documented: isDocumented };
    entry.count += 1;
    causes.set(`${isDocumented}|${cause}`, entry);
  }
  const failuresByCause = [...causes.entries()]
    .map(([key, value]) => ({ cause: key.slice(key.indexOf('|') + 1), ...value }))
    .sort((a, b) => b.count - a.count);
  const undocumented = failuresByCause.filter((f) => !f.documented).reduce((n, f) => n + f.count, 0);

  // Exchanges: the emulator's token endpoint (every OBO grant), against distinct users + refreshes + forced refreshes.
  const obo = input.tokenRequests.filter((t) => t.grantType === OBO_GRANT);
  const counters = instances.map((i) => i.counters()).reduce(sumCounters);
  const users = new Set([...Array.from({ length: input.warm.users }, (_, i) => i), ...reqs.map((r) => r.user)]);
  const distinctUsers = users.size;
  const bound = distinctUsers + counters.createsRefresh + counters.createsForce;
  const userOf = new Map<string, { user: number; at: number; error?: string }>([
    ...[...input.warm.requestUsers].map(([id, user]): [string, { user: number; at: number }] => [id, { user, at: -1 }]),
    ...reqs.map((r): [string, { user: number; at: number; error?: string }] => [r.requestId, r]),
  ]);
  /** Each user's issued tokens (request log): when, and by which instance. */
  const issued = new Map<number, { at: number; instance: string }[]>();
  const exchangesOf = new Map<number, number>();
  let coldAfterRestart = 0;
  /** Exchanges for users the fleet had cached (L2), by when they happened. */
  const again: Record<string, number> = {};
  const lineCache = { l1: 0, l2: 0, joined: 0, exchange: 0 };
  for (const instance of instances) {
    for (const line of instance.requestLines) {
      const request = userOf.get(line.requestId);
      if (!request) continue;
      if (line.cache === 'l1' || line.cache === 'l2' || line.cache === 'joined' || line.cache === 'exchange') lineCache[line.cache] += 1;
      if (line.cache !== 'exchange') continue;
      exchangesOf.set(request.user, (exchangesOf.get(request.user) ?? 0) + 1);
      // Refused by the throttle window, or answered 429 by Entra: no token was issued.
      if (!(line.status === 503 && request.error === 'temporarily_unavailable')) {
        issued.set(request.user, [...(issued.get(request.user) ?? []), { at: request.at, instance: instance.name }]);
      }
      if (cachedAt(request.user, request.at)) {
        const during = inOutage(request.at)
          ? 'Redis outage'
          : restart && request.at >= restart.start && request.at <= restart.end
            ? 'instance restart'
            : 'otherwise';
        again[during] = (again[during] ?? 0) + 1;
      }
      if (instance === instances[0] && line.lifetime > 1 && cachedAt(request.user, request.at)) coldAfterRestart += 1;
    }
  }
  const extraByCause: Record<ExtraCause, number> = {
    'same outage, other instance': 0,
    'issued in the kill, not in Redis yet': 0,
    unexplained: 0,
  };
  const outageOf = (t: number): Window | undefined => outages.find((w) => t >= w.start && t <= w.end + REDIS_SETTLE_SECONDS);
  for (const tokens of issued.values()) {
    tokens.sort((x, y) => x.at - y.at);
    for (let i = 1; i < tokens.length; i++) {
      const earlier = tokens[i - 1];
      const now = tokens[i];
      if (!earlier || !now) continue;
      const during = outageOf(earlier.at);
      if (during && outageOf(now.at) === during && now.instance !== earlier.instance) extraByCause['same outage, other instance'] += 1;
      else if (during?.name === 'redis-kill' && now.at > during.end) extraByCause['issued in the kill, not in Redis yet'] += 1;
      else extraByCause.unexplained += 1;
    }
  }
  const perUser: Record<string, number> = { '0': 0, '1': 0, '2': 0, '3+': 0 };
  for (const user of users) {
    const n = exchangesOf.get(user) ?? 0;
    const key = n >= 3 ? '3+' : String(n);
    perUser[key] = (perUser[key] ?? 0) + 1;
  }
  const exchanges = {
    tokenRequests: obo.length,
    ok: obo.filter((t) => t.status === 200).length,
    entra429: obo.filter((t) => t.status === 429).length,
    otherErrors: obo.filter((t) => t.status !== 200 && t.status !== 429).length,
    distinctUsers,
    refreshes: counters.createsRefresh,
    forced: counters.createsForce,
    bound,
    perUser,
    coldAfterRestart,
    againForCachedUsers: again,
    extraByCause,
  };

  const answered = counters.l1Hits + counters.l2Hits + counters.joins + counters.createsMiss + counters.createsForce;
  const share = (n: number): number => (answered === 0 ? 0 : round((100 * n) / answered));
  const shares = {
    l1: share(counters.l1Hits),
    l2: share(counters.l2Hits),
    joined: share(counters.joins),
    exchange: share(counters.createsMiss + counters.createsForce),
    counters,
  };

  const phaseOf = (t: number): string => windows.find((w) => t >= w.start && t <= w.end)?.name ?? 'steady';
  const phases = ['steady', ...windows.map((w) => w.name)].map((phase): Phase => {
    const inPhase = reqs.filter((r) => phaseOf(r.at) === phase);
    const ms = inPhase.map((r) => r.ms).sort((a, b) => a - b);
    return {
      phase,
      requests: inPhase.length,
      failed: inPhase.filter((r) => r.status !== 200).length,
      p50Ms: round(percentile(ms, 50)),
      p99Ms: round(percentile(ms, 99)),
    };
  });

  const loadSeconds = Math.ceil(Math.max(input.settings.seconds, ...reqs.map((r) => r.at)));
  const timeline: Second[] = [];
  for (let t = 0; t < loadSeconds; t++) {
    const inSecond = reqs.filter((r) => r.at >= t && r.at < t + 1);
    const ms = inSecond.map((r) => r.ms).sort((a, b) => a - b);
    const failed = inSecond.filter((r) => r.status !== 200);
    const doc = failed.filter(documented).length;
    timeline.push({
      t,
      sent: inSecond.length,
      ok: inSecond.length - failed.length,
      documented: doc,
      undocumented: failed.length - doc,
      p99Ms: round(percentile(ms, 99)),
    });
  }

  const rss = instances.map((instance) => {
    const samples = instance.rss.map(([t, mib]): [number, number] => [round(t - loadStart, 1), round(mib, 1)]).filter(([t]) => t >= -5);
    const values = samples.map(([, mib]) => mib).filter((mib) => !Number.isNaN(mib));
    return { instance: instance.name, startMib: values[0] ?? Number.NaN, maxMib: Math.max(...values), endMib: values.at(-1) ?? Number.NaN, samples };
  });

  const retriesByCause: Record<string, number> = {};
  for (const retry of balancer.retries) retriesByCause[retry.cause] = (retriesByCause[retry.cause] ?? 0) + 1;
  const errorsByCause: Record<string, number> = {};
  for (const error of balancer.connectionErrors) errorsByCause[error.cause] = (errorsByCause[error.cause] ?? 0) + 1;
  const balancerView = {
    events: balancer.events.map((e) => ({ ...e, at: rel(e.at) })),
    connectionErrors: balancer.connectionErrors.map((e) => ({ ...e, at: rel(e.at) })),
    errorsByCause,
    retriesByCause,
    failOpen: balancer.failOpen,
  };

  const findings: string[] = [];
  let lines = 0;
  for (const instance of instances) {
    for (const line of instance.output) {
      lines += 1;
      if (JWT_SHAPED.test(line)) findings.push(`${instance.name}: a JWT-shaped string in a line starting ${JSON.stringify(line.slice(0, 60))}`);
      for (const [i, secret] of input.secrets.entries())
        if (line.includes(secret)) findings.push(`${instance.name}: configured secret #${i + 1} in a line`);
    }
  }

  const restartLost = restart
    ? reqs.filter((r) => r.at >= restart.start - 1 && r.at <= restart.end + 1 && (r.status === 0 || (r.status === 502 && r.error === 'bad_gateway')))
        .length
    : 0;
  const inRestart = restart ? reqs.filter((r) => r.at >= restart.start && r.at <= restart.end).length : 0;
  const checks: Check[] = [
    {
      name: 'no request fails except the documented ones',
      passed: undocumented === 0,
      detail: `${undocumented} undocumented failure(s) of ${reqs.length} requests; documented: ${failuresByCause.filter((f) => f.documented).reduce((n, f) => n + f.count, 0)}`,
    },
    {
      name: 'exchanges ≤ distinct users + refreshes + forced refreshes',
      passed: exchanges.ok <= bound,
      detail: `${exchanges.ok} exchanges ≤ ${distinctUsers} users + ${counters.createsRefresh} refreshes + ${counters.createsForce} forced = ${bound}; beyond each user's first, by cause: ${Object.entries(
        extraByCause,
      )
        .map(([cause, n]) => `${cause} ${n}`)
        .join(', ')}`,
    },
    {
      name: 'every request completed during the rolling restart (0 connection errors at the balancer)',
      passed: balancer.connectionErrors.length === 0 && restartLost === 0 && restart !== undefined,
      detail: `${inRestart} requests sent while ${restart?.detail ?? 'the instance restarted'}; ${restartLost} without a response; ${balancer.connectionErrors.length} connection errors at the balancer over the run; ${balancer.retries.length} connects resent to the other instance`,
    },
    {
      name: 'no token or secret in any instance output',
      passed: findings.length === 0,
      detail: `${lines} lines scanned (stdout and stderr of ${instances.reduce((n, i) => n + i.starts, 0)} processes) for JWT-shaped strings and ${input.secrets.length} configured secrets: ${findings.length} finding(s)${findings.length ? `: ${findings.slice(0, 3).join('; ')}` : ''}`,
    },
  ];

  return {
    mode: input.mode,
    settings: input.settings,
    redisFaultTarget: input.redisFaultTarget,
    windows,
    requests: reqs.length,
    loadSeconds,
    achievedRate: round(reqs.length / Math.max(1, ...reqs.map((r) => r.at))),
    byStatus,
    failuresByCause,
    exchanges,
    shares: { ...shares, fromLogs: lineCache },
    phases,
    rss,
    balancer: balancerView,
    secretScan: { lines, findings },
    cpu: input.cpu,
    timeline,
    checks,
  };
}

/** Where an undocumented failure happened, for its cause line. */
function describeContext(r: SoakRequest, windows: Window[]): string {
  const w = windows.find((window) => r.at >= window.start && r.at <= window.end + 1);
  return w ? ` (in ${w.name})` : ' (steady)';
}

function sumCounters(a: CacheCounters, b: CacheCounters): CacheCounters {
  const sum = { ...a };
  for (const key of Object.keys(sum) as (keyof CacheCounters)[]) sum[key] += b[key];
  return sum;
}

const fmt = (n: number): string => (Number.isNaN(n) ? '–' : n.toLocaleString('en-US'));

export function renderMarkdown(results: SoakResults): string {
  const out: string[] = [];
  out.push(
    `Soak of ${results.startedAt}: \`${results.command}\`. Machine: ${results.machine.cpus} cores (shared), Node ${results.machine.node}, load average ${results.machine.loadAverage.start.toFixed(1)} at the start, ${results.machine.loadAverage.end.toFixed(1)} at the end.`,
    '',
  );
  for (const run of results.runs) {
    const s = run.settings;
    out.push(`## ${run.mode === 'single' ? 'One Redis server' : 'Redis Cluster, three masters'}`, '');
    out.push(
      `${run.loadSeconds} s (--seconds ${s.seconds}, longer while the schedule ran) at ${s.rate} req/s (achieved ${run.achievedRate}), ${s.users.toLocaleString('en-US')} users (80 % warmed before the load, 20 % arriving over its first 80 %), exchange latency ${s.latencyMs} ms; two instances behind the balancer; Redis faults hit ${run.redisFaultTarget}.`,
      '',
    );
    out.push('| Check | Result | Detail |', '|---|---|---|');
    for (const check of run.checks) out.push(`| ${check.name} | ${check.passed ? '**pass**' : '**FAIL**'} | ${check.detail} |`);
    out.push('', '| Fault | from s | to s |', '|---|---:|---:|');
    for (const w of run.windows) out.push(`| ${w.label}${w.detail ? ` (${w.detail})` : ''} | ${w.start.toFixed(1)} | ${w.end.toFixed(1)} |`);
    out.push(
      '',
      `Requests by status: ${Object.entries(run.byStatus)
        .map(([status, n]) => `${status}: ${fmt(n)}`)
        .join(', ')}.`,
      '',
    );
    if (run.failuresByCause.length > 0) {
      out.push('| Failure | Requests | Documented |', '|---|---:|---|');
      for (const f of run.failuresByCause) out.push(`| ${f.cause} | ${fmt(f.count)} | ${f.documented ? 'yes' : '**no**'} |`);
      out.push('');
    }
    const e = run.exchanges;
    out.push(
      `Exchanges (OBO grants at the token endpoint): ${fmt(e.tokenRequests)} requests, ${fmt(e.ok)} issued, ${fmt(e.entra429)} answered 429, ${fmt(e.otherErrors)} other errors; ${fmt(e.distinctUsers)} distinct users, ${fmt(e.refreshes)} refreshes, ${fmt(e.forced)} forced refreshes. Users by exchanges their requests made: ${Object.entries(
        e.perUser,
      )
        .map(([k, n]) => `${k}: ${fmt(n)}`)
        .join(
          ', ',
        )}. Exchanges by the restarted instance for users already cached: ${fmt(e.coldAfterRestart)}. Exchanges for users already cached in L2, by when: ${
        Object.entries(e.againForCachedUsers)
          .map(([k, n]) => `${k} ${fmt(n)}`)
          .join(', ') || 'none'
      }.`,
      '',
    );
    out.push(
      `Tokens issued beyond each user's first, by why the earlier one could not serve: ${(Object.keys(EXTRA_CAUSES) as ExtraCause[])
        .map((cause) => `${cause} (${EXTRA_CAUSES[cause]}): ${fmt(e.extraByCause[cause])}`)
        .join('; ')}.`,
      '',
    );
    const c = run.shares.counters;
    out.push(
      `Token answers (obo_cache_* of both instances, every lifetime): L1 ${run.shares.l1} %, L2 ${run.shares.l2} %, joined another's exchange ${run.shares.joined} %, exchange ${run.shares.exchange} % (${fmt(c.l1Hits)} / ${fmt(c.l2Hits)} / ${fmt(c.joins)} / ${fmt(c.createsMiss + c.createsForce)}; ${fmt(c.createErrors)} failed creates, ${fmt(c.l2Errors)} L2 errors, ${fmt(c.l2Skipped)} L2 operations skipped; ${fmt(c.peerFills)} entries taken from another instance (peer fill), ${fmt(c.writeBacks)} written to Redis after an outage; created during an invalidation gap and checked at the resync: ${fmt(c.resyncKept)} kept, ${fmt(c.resyncDropped)} dropped).`,
      '',
    );
    out.push('| Phase | Requests | Failed | p50 ms | p99 ms |', '|---|---:|---:|---:|---:|');
    for (const p of run.phases) out.push(`| ${p.phase} | ${fmt(p.requests)} | ${fmt(p.failed)} | ${fmt(p.p50Ms)} | ${fmt(p.p99Ms)} |`);
    out.push(
      '',
      '| Instance | RSS at start MiB | max MiB | at end MiB | CPU s over the load | CPU µs per request (its share) |',
      '|---|---:|---:|---:|---:|---:|',
    );
    for (const r of run.rss) {
      const cpu = run.cpu.instances.find((c) => c.instance === r.instance)?.seconds ?? Number.NaN;
      out.push(
        `| ${r.instance} | ${fmt(r.startMib)} | ${fmt(r.maxMib)} | ${fmt(r.endMib)} | ${fmt(cpu)} | ${fmt(Math.round((cpu * 1e6 * run.cpu.instances.length) / run.requests))} |`,
      );
    }
    const total = run.cpu.runnerSeconds + run.cpu.instances.reduce((n, c) => n + c.seconds, 0);
    out.push(
      '',
      `CPU over the load: ${fmt(total)} s in ${run.loadSeconds} s (${fmt(Math.round((100 * total) / run.loadSeconds))} % of one core): both instances and the runner (emulator, balancer and load in one process, ${fmt(run.cpu.runnerSeconds)} s); Redis not counted.`,
    );
    const list = (counts: Record<string, number>): string =>
      Object.entries(counts)
        .map(([cause, n]) => `${cause} ×${n}`)
        .join(', ') || 'none';
    out.push(
      '',
      `Balancer: ${run.balancer.events.map((ev) => `${ev.backend} ${ev.change} at ${ev.at.toFixed(1)} s (${ev.reason})`).join('; ') || 'no rotation changes'}. Connects resent to the other instance: ${list(run.balancer.retriesByCause)}. Connection errors: ${list(run.balancer.errorsByCause)}. Requests routed while no instance was in rotation (fail-open): ${run.balancer.failOpen}.`,
      '',
    );
  }
  return `${out.join('\n')}\n`;
}
