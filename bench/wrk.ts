/**
 * Load from wrk (Debian's `wrk`): one thread, N connections, a Lua script that rotates through
 * the users' tokens (all connections share one counter, so requests go user after user).
 * The script and the token file live in the bench's temp dir; wrk prints one JSON line.
 */
import { execFile, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface LoadResult {
  /** Completed responses, and those of them with a status ≥ 400 or a socket error. */
  requests: number;
  failed: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
}

const SCRIPT = String.raw`
local tokens, n, i = {}, 0, 0
function init(args)
  local count = tonumber(args[2])
  for line in io.lines(args[1]) do
    if n >= count then break end
    n = n + 1
    tokens[n] = "Bearer " .. line
  end
end
function request()
  i = i % n + 1
  return wrk.format(nil, nil, { Authorization = tokens[i] })
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"micros":%d,"failed":%d,"p50":%d,"p99":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

/** wrk's path, installing Debian's package when it is missing; undefined when that fails too. */
export function ensureWrk(log: (text: string) => void): string | undefined {
  const found = (): string | undefined => {
    const which = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' });
    return which.status === 0 ? which.stdout.trim() : undefined;
  };
  const path = found();
  if (path) return path;
  log('wrk is missing: apt-get install -y wrk');
  const command = ['apt-get', 'install', '-y', 'wrk'];
  // Not root: sudo without a password prompt, or nothing.
  const [bin, ...args] = process.getuid?.() === 0 ? command : ['sudo', '-n', ...command];
  const install = spawnSync(bin ?? 'apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (install.status !== 0) log('could not install wrk; falling back to autocannon (a Node process: it takes CPU the servers would use)');
  return found();
}

export async function writeWrkScript(dir: string): Promise<string> {
  const file = join(dir, 'rotate-tokens.lua');
  await writeFile(file, SCRIPT);
  return file;
}

export async function runWrk(
  wrk: string,
  script: string,
  url: string,
  options: { tokenFile: string; users: number; seconds: number; connections: number },
): Promise<LoadResult> {
  const args = [
    '-t1',
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    '--timeout',
    '10s',
    '-s',
    script,
    url,
    '--',
    options.tokenFile,
    String(options.users),
  ];
  const { stdout } = await promisify(execFile)(wrk, args, { maxBuffer: 1024 * 1024 });
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
  const r = JSON.parse(line.slice('WRK_JSON '.length)) as { requests: number; micros: number; failed: number; p50: number; p99: number };
  return { requests: r.requests, failed: r.failed, seconds: r.micros / 1e6, p50Ms: r.p50 / 1000, p99Ms: r.p99 / 1000 };
}
