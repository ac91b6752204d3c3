/** The benchmark's results: their shape, the targets of issue 11, and the markdown. */
import type { ProfileSummary } from './profile.js';

export type PathName = 'reference' | 'floor' | 'verifyEvery' | 'defaults' | 'l2' | 'me';

const PATH_LABELS: Record<PathName, string> = {
  reference: 'reference: Koa + jose, verify every token',
  floor: 'floor: reference + SHA-256 map of verified tokens',
  verifyEvery: 'service token path, L1 warm, TOKEN_VALIDATION_CACHE_MAX_BYTES=0',
  defaults: 'service token path, L1 warm, defaults',
  l2: 'service token path, L1 off, L2 warm (Redis), defaults',
  me: 'service GET /api/me (Graph emulator), defaults',
};

export interface PathResult {
  name: PathName;
  requests: number;
  failed: number;
  seconds: number;
  reqPerSec: number;
  /** req/s of each round, in round order (rounds alternate the order of the paths). */
  perRoundReqPerSec: number[];
  /** Median over the rounds of each round's p50 and p99 (the load tool reports them per segment). */
  p50Ms: number;
  p99Ms: number;
  perRoundP99Ms: number[];
  /** CPU time (user + system) of the serving process over the requests it served. */
  cpuMicrosPerRequest: number;
  /** How the service's cache answered (counter deltas); empty for the reference servers. */
  cache: Record<string, number>;
}

export interface UsersRun {
  users: number;
  mintSeconds: number;
  /** Every user's first request, per server that keeps state: seconds and failures. */
  fills: { server: string; seconds: number; failed: number; firstFailure?: number }[];
  /** Token-endpoint calls during the measured segments, per user (0 when the caches are warm). */
  exchangesPerUser: number;
  paths: PathResult[];
  /** After all rounds, after a full GC. */
  memory: {
    defaultsRssBytes: number;
    defaultsHeapUsedBytes: number;
    l1Entries: number;
    l1AccountedBytes: number;
    /** The verified-token cache of the defaults instance: entries, and its budget as the service reports it. */
    tokenCacheEntries: number;
    tokenCacheMaxBytes: number;
    verifyEveryRssBytes: number;
    l2OnlyRssBytes: number;
    referenceRssBytes: number;
  };
  profiles: ProfileSummary[];
}

export interface TargetVerdict {
  target: string;
  status: 'met' | 'missed' | 'reported' | 'not measured';
  detail: string;
}

export interface Budgets {
  l1MaxBytes: number;
  validationCacheBytes: number;
  baseBytes: number;
}

export interface BenchResults {
  startedAt: string;
  totalSeconds: number;
  /** `loadAverage`: the 1-minute load average when the run started and ended (cpus = fully busy). */
  machine: { loadAverage: { start: number; end: number }; cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  settings: {
    loadTool: 'wrk' | 'autocannon';
    connections: number;
    rounds: number;
    secondsPerSegment: number;
    budgets: Budgets;
    serviceHeapMib: number;
  };
  runs: UsersRun[];
  targets: TargetVerdict[];
}

const MIB = 1024 * 1024;

/** Middle value (the mean of the middle two for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0 ? Number.NaN : sorted.length % 2 ? (sorted[mid] ?? Number.NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function path(run: UsersRun, name: PathName): PathResult | undefined {
  return run.paths.find((p) => p.name === name);
}

function ratio(run: UsersRun, name: PathName, base: PathName): number {
  return (path(run, name)?.reqPerSec ?? Number.NaN) / (path(run, base)?.reqPerSec ?? Number.NaN);
}

/** The ratio round by round: in each round the two paths ran close together. */
function roundRatios(run: UsersRun, name: PathName, base: PathName): number[] {
  const of = path(run, name)?.perRoundReqPerSec ?? [];
  const to = path(run, base)?.perRoundReqPerSec ?? [];
  return of.map((value, i) => value / (to[i] ?? Number.NaN));
}

const fixed = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const mib = (bytes: number): string => (bytes / MIB).toFixed(0);
const thousands = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');

/** `2.31× (rounds 2.1–2.5)`, plus how far from `goal` when short of it. */
function ratioText(run: UsersRun, name: PathName, base: PathName, goal: number): string {
  const r = ratio(run, name, base);
  const spread = roundRatios(run, name, base);
  const rounds = spread.length > 1 ? ` (rounds ${fixed(Math.min(...spread))}–${fixed(Math.max(...spread))})` : '';
  const gap = r >= goal ? '' : `, ${fixed((goal / r - 1) * 100, 0)}% short`;
  return `${thousands(run.users)} users: ${fixed(r)}×${rounds}${gap}`;
}

function ratioTarget(runs: UsersRun[], target: string, name: PathName, base: PathName, goal: number): TargetVerdict {
  const measured = runs.filter((run) => path(run, name) && path(run, base));
  return {
    target,
    status: measured.length === 0 ? 'not measured' : measured.every((run) => ratio(run, name, base) >= goal) ? 'met' : 'missed',
    detail: measured.map((run) => ratioText(run, name, base, goal)).join('; '),
  };
}

export function evaluateTargets(runs: UsersRun[], budgets: Budgets): TargetVerdict[] {
  const verdicts: TargetVerdict[] = [
    ratioTarget(runs, 'token path, L1 warm, every token verified ≥ 0.9× reference', 'verifyEvery', 'reference', 0.9),
    ratioTarget(runs, 'token path with the defaults ≥ 2× reference', 'defaults', 'reference', 2),
    ratioTarget(runs, 'token path with the defaults ≥ 0.75× floor', 'defaults', 'floor', 0.75),
    ratioTarget(runs, 'token path, L1 off, L2 warm ≥ 0.9× reference', 'l2', 'reference', 0.9),
  ];
  verdicts.push({
    target: 'GET /api/me end to end (no target)',
    status: 'reported',
    detail: runs
      .map(
        (run) =>
          `${thousands(run.users)} users: ${thousands(path(run, 'me')?.reqPerSec ?? Number.NaN)} req/s = ${fixed(ratio(run, 'me', 'reference'))}×, ${fixed(path(run, 'me')?.cpuMicrosPerRequest ?? Number.NaN, 0)} µs CPU/req`,
      )
      .join('; '),
  });
  const p99 = runs.map((run) => ({
    users: run.users,
    ours: path(run, 'defaults')?.p99Ms ?? Number.NaN,
    theirs: path(run, 'reference')?.p99Ms ?? Number.NaN,
  }));
  verdicts.push({
    target: "p99 of the default token path ≤ the reference's p99",
    status: p99.length === 0 ? 'not measured' : p99.every((p) => p.ours <= p.theirs) ? 'met' : 'missed',
    detail: p99
      .map(
        (p) =>
          `${thousands(p.users)} users: ${fixed(p.ours)} ms vs ${fixed(p.theirs)} ms${p.ours > p.theirs ? ` (+${fixed(p.ours - p.theirs)} ms)` : ''}`,
      )
      .join('; '),
  });
  const limit = budgets.l1MaxBytes + budgets.validationCacheBytes + budgets.baseBytes;
  const big = runs.filter((run) => run.users >= 100_000);
  verdicts.push({
    target: `API RSS after a full GC ≤ L1 ${mib(budgets.l1MaxBytes)} + validation cache ${mib(budgets.validationCacheBytes)} + base ${mib(budgets.baseBytes)} = ${mib(limit)} MiB at 100,000 users`,
    status: big.length === 0 ? 'not measured' : big.every((run) => run.memory.defaultsRssBytes <= limit) ? 'met' : 'missed',
    detail:
      runs
        .map(
          (run) =>
            `${thousands(run.users)} users: ${mib(run.memory.defaultsRssBytes)} MiB (heap ${mib(run.memory.defaultsHeapUsedBytes)} MiB; L1 ${thousands(run.memory.l1Entries)} entries, ${mib(run.memory.l1AccountedBytes)} MiB accounted; ` +
            `verified-token cache ${thousands(run.memory.tokenCacheEntries)} entries, budget ${mib(run.memory.tokenCacheMaxBytes)} MiB; ` +
            `same service with L1 off ${mib(run.memory.l2OnlyRssBytes)} MiB, reference ${mib(run.memory.referenceRssBytes)} MiB)`,
        )
        .join('; ') + (big.length === 0 ? '; 100,000 users were not run' : ''),
  });
  return verdicts;
}

/** Where the cache's answers came from, as shares: "L1 100%", "L2 71%, joined 29%". */
function answeredBy(p: PathResult): string {
  const parts: [string, number][] = [
    ['L1', p.cache['l1Hits'] ?? 0],
    ['L2', p.cache['l2Hits'] ?? 0],
    ['joined', p.cache['joins'] ?? 0],
    ['exchange', p.cache['misses'] ?? 0],
  ];
  const total = parts.reduce((sum, [, n]) => sum + n, 0);
  const hits = p.cache['tokenCacheHits'] ?? 0;
  const lookups = hits + (p.cache['tokenCacheMisses'] ?? 0);
  const answers = parts
    .filter(([, n]) => n > 0)
    .map(([label, n]) => `${label} ${fixed((n / total) * 100, n === total ? 0 : 1)}%`)
    .join(', ');
  const errors = p.cache['l2Errors'] ? ` (${thousands(p.cache['l2Errors'])} L2 errors)` : '';
  const verified = lookups > 0 ? `; verified-token cache hits ${fixed((hits / lookups) * 100, 1)}%` : '';
  return total === 0 ? '–' : answers + errors + verified;
}

export function renderProfile(summary: ProfileSummary, top = 15): string[] {
  const lines = [
    `Profile of ${summary.file} (${thousands(summary.requests)} requests, ${fixed(summary.microsPerRequest, 0)} µs of profiled CPU per request):`,
    '',
  ];
  lines.push('| self time by package / file | µs/req | share |', '|---|---:|---:|');
  for (const s of summary.byPlace.slice(0, top)) lines.push(`| ${s.name} | ${fixed(s.microsPerRequest, 1)} | ${fixed(s.share * 100, 1)}% |`);
  lines.push('', '| self time by function | µs/req | share |', '|---|---:|---:|');
  for (const s of summary.byFunction.slice(0, top + 5))
    lines.push(`| \`${s.name}\` | ${fixed(s.microsPerRequest, 1)} | ${fixed(s.share * 100, 1)}% |`);
  if (summary.inclusiveOurs.length > 0) {
    lines.push('', '| our functions, with what they call | µs/req | share |', '|---|---:|---:|');
    for (const s of summary.inclusiveOurs.slice(0, top))
      lines.push(`| \`${s.name}\` | ${fixed(s.microsPerRequest, 1)} | ${fixed(s.share * 100, 1)}% |`);
  }
  lines.push('');
  return lines;
}

export function renderMarkdown(results: BenchResults): string {
  const { machine, settings } = results;
  const lines: string[] = [];
  lines.push(
    `Machine: ${machine.cpus} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}; ` +
      `load average ${fixed(machine.loadAverage.start)} at the start, ${fixed(machine.loadAverage.end)} at the end (the cores are shared: expect noise).`,
  );
  lines.push(
    `Load: ${settings.loadTool}, 1 thread, ${settings.connections} connections, rotating through the users' tokens; ${settings.rounds} round(s) × ${settings.secondsPerSegment} s per path, ` +
      `paths interleaved (ABBA), a full GC in the serving process before each segment. Every server is its own process. ` +
      `Service: createApp defaults, LOG_LEVEL=info to /dev/null, rate limits off, L1 budget ${mib(settings.budgets.l1MaxBytes)} MiB, verified-token cache ${mib(settings.budgets.validationCacheBytes)} MiB (both sized to the largest user count), heap capped at ${settings.serviceHeapMib} MiB.`,
  );
  lines.push('');
  lines.push('| Users | Path | req/s | × reference | p50 ms | p99 ms | CPU µs/req | Graph token from; verified-token cache |');
  lines.push('|---:|---|---:|---:|---:|---:|---:|---|');
  for (const run of results.runs) {
    const reference = path(run, 'reference')?.reqPerSec ?? Number.NaN;
    for (const p of run.paths) {
      lines.push(
        `| ${thousands(run.users)} | ${PATH_LABELS[p.name]}${p.failed ? ` (**${thousands(p.failed)} failed**)` : ''} | ${thousands(p.reqPerSec)} | ${fixed(p.reqPerSec / reference)} | ` +
          `${fixed(p.p50Ms)} | ${fixed(p.p99Ms)} | ${fixed(p.cpuMicrosPerRequest, 0)} | ${answeredBy(p)} |`,
      );
    }
  }
  lines.push('');
  lines.push('Targets:');
  lines.push('');
  for (const verdict of results.targets) lines.push(`- **${verdict.status}**: ${verdict.target}. ${verdict.detail}.`);
  lines.push('');
  lines.push('| Users | tokens minted in | fills (each user once) | exchanges/user while measured |', '|---:|---:|---|---:|');
  for (const run of results.runs) {
    const fills = run.fills
      .map((f) => `${f.server} ${fixed(f.seconds, 1)} s${f.failed ? ` (${f.failed} failed, first ${f.firstFailure})` : ''}`)
      .join(', ');
    lines.push(`| ${thousands(run.users)} | ${fixed(run.mintSeconds, 1)} s | ${fills} | ${fixed(run.exchangesPerUser)} |`);
  }
  lines.push('');
  for (const run of results.runs) for (const summary of run.profiles) lines.push(...renderProfile(summary));
  lines.push(`Whole run: ${fixed(results.totalSeconds / 60, 1)} min.`);
  return `${lines.join('\n')}\n`;
}
