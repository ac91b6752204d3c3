/**
 * The API instances of the soak: each one is `api/main.ts` in a process of its own, configured
 * only through its environment (as a user starts it), on a fixed port so that a restarted
 * instance comes back at the address the balancer knows. Everything it writes (stdout and
 * stderr) is kept for the secret scan and the request log; its RSS is read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

/** One request line of an instance's log (the fields the soak reads). */
export interface RequestLine {
  requestId: string;
  status: number;
  path: string;
  cache?: string;
  /** 1 for the first process of this instance, 2 after its restart, … */
  lifetime: number;
}

/** The obo_cache_* counters the report needs, summed over an instance's lifetimes. */
export interface CacheCounters {
  l1Hits: number;
  l2Hits: number;
  joins: number;
  createsMiss: number;
  createsForce: number;
  createsRefresh: number;
  createErrors: number;
  l2Errors: number;
  l2Skipped: number;
  /** Entries another instance created, put in this L1 (peer fill). */
  peerFills: number;
  /** Entries created while Redis was unreachable, written to it once it was back. */
  writeBacks: number;
  /** Entries an instance created during an invalidation gap, kept at its resync (no marker since) or dropped. */
  resyncKept: number;
  resyncDropped: number;
}

const ZERO: CacheCounters = {
  l1Hits: 0,
  l2Hits: 0,
  joins: 0,
  createsMiss: 0,
  createsForce: 0,
  createsRefresh: 0,
  createErrors: 0,
  l2Errors: 0,
  l2Skipped: 0,
  peerFills: 0,
  writeBacks: 0,
  resyncKept: 0,
  resyncDropped: 0,
};

export class ApiInstance {
  /** Every line either stream carried, over every lifetime. */
  readonly output: string[] = [];
  readonly requestLines: RequestLine[] = [];
  /** [seconds since the soak started, RSS MiB]; NaN while the process is down. */
  readonly rss: [number, number][] = [];
  /** Lifetimes' counters: the last scrape of each ended lifetime, and the current one's latest. */
  private endedCounters: CacheCounters = { ...ZERO };
  private latestCounters: CacheCounters = { ...ZERO };
  private child: ChildProcess | undefined;
  private exited: Promise<unknown> = Promise.resolve();
  private rssTimer: NodeJS.Timeout | undefined;
  /** CPU seconds of the ended lifetimes, and the current one's latest reading. */
  private endedCpu = 0;
  private latestCpu = 0;
  starts = 0;

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
    private readonly metricsToken: string,
    private readonly clock: () => number,
  ) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process and resolves once it logged `listening`. */
  async start(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts'], {
      env: { ...this.env, PORT: String(this.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.starts += 1;
    this.endedCpu += this.latestCpu;
    this.latestCpu = 0;
    this.exited = once(child, 'close');
    let listening: () => void = () => undefined;
    const listened = new Promise<void>((resolve) => (listening = resolve));
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.output.push(line);
      if (!line.startsWith('{')) return;
      try {
        const parsed = JSON.parse(line) as { msg?: string } & Partial<RequestLine>;
        if (parsed.msg === 'listening') listening();
        if (parsed.msg === 'request' && typeof parsed.requestId === 'string' && typeof parsed.status === 'number') {
          this.requestLines.push({
            requestId: parsed.requestId,
            status: parsed.status,
            path: String(parsed.path),
            lifetime: this.starts,
            ...(parsed.cache ? { cache: parsed.cache } : {}),
          });
        }
      } catch {
        // not a log line: kept in output for the scan all the same
      }
    });
    createInterface({ input: child.stderr }).on('line', (line) => this.output.push(line));
    clearInterval(this.rssTimer);
    this.rssTimer = setInterval(() => void this.sampleRss(), 1_000);
    const failed = this.exited.then(() => {
      throw new Error(`${this.name} exited before listening:\n${this.output.slice(-20).join('\n')}`);
    });
    await Promise.race([listened, failed]);
    void failed.catch(() => undefined);
  }

  /** SIGTERM, as an orchestrator stops a container, and waits for the exit (the last scrape first). */
  async terminate(): Promise<void> {
    await this.scrape().catch(() => undefined);
    this.endedCounters = add(this.endedCounters, this.latestCounters);
    this.latestCounters = { ...ZERO };
    this.child?.kill('SIGTERM');
    await this.exited;
  }

  /** At the end of the soak: a last scrape, then SIGTERM. */
  async stop(): Promise<void> {
    clearInterval(this.rssTimer);
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) await this.terminate();
  }

  /** The counters over every lifetime of this instance, as of the last scrape. */
  counters(): CacheCounters {
    return add(this.endedCounters, this.latestCounters);
  }

  async scrape(): Promise<void> {
    const response = await fetch(`${this.baseUrl}/metrics`, {
      headers: { authorization: `Bearer ${this.metricsToken}` },
      signal: AbortSignal.timeout(2_000),
    });
    if (!response.ok) throw new Error(`${this.name} /metrics: ${response.status}`);
    this.latestCounters = parseCounters(await response.text());
  }

  private async sampleRss(): Promise<void> {
    const at = this.clock();
    const pid = this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
    const status = pid === undefined ? '' : await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kib = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    this.rss.push([at, kib === undefined ? Number.NaN : Number(kib) / 1024]);
    // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 a second on Linux).
    const stat = pid === undefined ? '' : await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (Number.isFinite(ticks)) this.latestCpu = ticks / 100;
  }

  /** CPU seconds (user + system) over every lifetime, as of the last sample. */
  cpuSeconds(): number {
    return this.endedCpu + this.latestCpu;
  }
}

function add(a: CacheCounters, b: CacheCounters): CacheCounters {
  const sum = { ...a };
  for (const key of Object.keys(sum) as (keyof CacheCounters)[]) sum[key] += b[key];
  return sum;
}

/** The counters of a Prometheus text exposition (only the series the soak reads). */
function parseCounters(text: string): CacheCounters {
  const counters = { ...ZERO };
  for (const line of text.split('\n')) {
    const match = /^(obo_cache_[a-z0-9_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+)$/.exec(line);
    if (!match) continue;
    const [, name, labelText = '', valueText] = match;
    const labels = new Map([...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m): [string, string] => [m[1] ?? '', m[2] ?? '']));
    const value = Number(valueText);
    if (name === 'obo_cache_hits_total' && labels.get('level') === 'l1') counters.l1Hits += value;
    else if (name === 'obo_cache_hits_total' && labels.get('level') === 'l2') counters.l2Hits += value;
    else if (name === 'obo_cache_joins_total') counters.joins += value;
    else if (name === 'obo_cache_creates_total') {
      if (labels.get('result') === 'error') counters.createErrors += value;
      else if (labels.get('trigger') === 'miss') counters.createsMiss += value;
      else if (labels.get('trigger') === 'force') counters.createsForce += value;
      else if (labels.get('trigger') === 'refresh') counters.createsRefresh += value;
    } else if (name === 'obo_cache_l2_errors_total') counters.l2Errors += value;
    else if (name === 'obo_cache_l2_skipped_total') counters.l2Skipped += value;
    else if (name === 'obo_cache_peer_fills_total' && labels.get('result') === 'applied') counters.peerFills += value;
    else if (name === 'obo_cache_l2_writebacks_total' && labels.get('result') === 'ok') counters.writeBacks += value;
    else if (name === 'obo_cache_resync_created_total' && labels.get('result') === 'kept') counters.resyncKept += value;
    else if (name === 'obo_cache_resync_created_total' && labels.get('result') === 'dropped') counters.resyncDropped += value;
  }
  return counters;
}
