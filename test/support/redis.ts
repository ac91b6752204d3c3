/**
 * Starts a real, throw-away `redis-server` for tests.
 *
 *   const redis = await startRedis();          // 127.0.0.1:<free port>, no persistence
 *   ... createRedisStore({ url: redis.url, ... })
 *   await redis.kill();                        // SIGKILL: simulate a crash
 *   await redis.restart();                     // same port, empty data set
 *   await redis.stop();                        // in after(): stops it and removes its temp dir
 *
 * - `client()` returns a plain ioredis client (yours to inspect with; disconnected by stop()).
 * - `pause()` / `resume()` send SIGSTOP / SIGCONT: the server keeps its sockets open but
 *   answers nothing, which is how a brown-out (timeouts, not connection errors) looks.
 * - Options: `password` (requirepass for the default user), `user` (an extra ACL user with
 *   all permissions, for `redis://user:pass@` URLs), `args` (extra redis-server arguments),
 *   `bin` (default: `redis-server` from PATH).
 * - If the test process exits without stop(), the server is killed on exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface StartRedisOptions {
  password?: string;
  user?: { name: string; password: string };
  args?: string[];
  bin?: string;
  /** How long to wait for the first PONG. Default 10000 ms. */
  startTimeoutMs?: number;
}

export interface RedisServer {
  /** redis://[user:password@]127.0.0.1:port (the ACL user when given, else the password). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly pid: number | undefined;
  /** A new ioredis client to this server (as the default user); stop() disconnects it. */
  client(): Redis;
  /** SIGTERM, wait for exit, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (the temp dir stays, for restart()). */
  kill(): Promise<void>;
  /** Start again on the same port (after kill() or stop(); kills first if still running). */
  restart(): Promise<void>;
  /** SIGSTOP: the server stops answering but keeps its connections (a brown-out). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Sends PING over a raw socket; true on +PONG or an auth error (the server is up either way). */
function ping(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (chunk) => {
      answer += chunk.toString('utf8');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG') || answer.startsWith('-NOAUTH') || answer.startsWith('-WRONGPASS'));
    });
    socket.connect(port, host, () => socket.write('PING\r\n'));
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'obo-redis-'));
  const args = [...(options.password ? ['--requirepass', options.password] : []), ...userArgs(options.user), ...(options.args ?? [])];
  let attempt = 0;
  for (;;) {
    const port = await freePort();
    try {
      const node = await spawnRedisServer({ port, dir, args, bin: options.bin, startTimeoutMs: options.startTimeoutMs });
      return new LocalRedis(node, port, dir, options);
    } catch (err) {
      // Another process may have taken the port between freePort() and the bind: retry.
      if (++attempt >= 3) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }
}

function userArgs(user: StartRedisOptions['user']): string[] {
  // redis-server joins the words after --user into one `user` config line.
  return user ? ['--user', user.name, 'on', `>${user.password}`, '~*', '&*', '+@all'] : [];
}

/** One running redis-server process; shared with the cluster helper. */
export interface SpawnedRedis {
  readonly process: ChildProcess;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
  /** Kills the process with the signal and waits for it to exit. */
  terminate(signal: NodeJS.Signals): Promise<void>;
}

export async function spawnRedisServer(options: {
  port: number;
  dir: string;
  args?: string[];
  bin?: string;
  startTimeoutMs?: number;
}): Promise<SpawnedRedis> {
  const argv = [
    '--port',
    String(options.port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    options.dir,
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
    ...(options.args ?? []),
  ];
  const child = spawn(options.bin ?? 'redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      hasExited = true;
      resolve();
    });
    child.once('error', (err) => {
      output += `\n${err.message}`;
      hasExited = true;
      resolve();
    });
  });
  // A test process that dies without stop() must not leave servers behind.
  const onExit = () => {
    if (!hasExited) child.kill('SIGKILL');
  };
  process.once('exit', onExit);
  void exited.then(() => process.removeListener('exit', onExit));

  const terminate = async (signal: NodeJS.Signals) => {
    if (hasExited) return;
    if (signal !== 'SIGKILL') child.kill('SIGCONT'); // a paused server cannot handle SIGTERM
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };

  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  while (!hasExited && Date.now() < deadline) {
    if (await ping(options.port)) return { process: child, exited, terminate };
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  await terminate('SIGKILL');
  throw new Error(`redis-server on port ${options.port} did not start: ${output.trim() || 'no output'}`);
}

class LocalRedis implements RedisServer {
  readonly host = '127.0.0.1';
  readonly url: string;
  private node: SpawnedRedis;
  private readonly clients = new Set<Redis>();
  private stopped = false;

  constructor(
    node: SpawnedRedis,
    readonly port: number,
    private readonly dir: string,
    private readonly options: StartRedisOptions,
  ) {
    this.node = node;
    const auth = options.user
      ? `${encodeURIComponent(options.user.name)}:${encodeURIComponent(options.user.password)}@`
      : options.password
        ? `:${encodeURIComponent(options.password)}@`
        : '';
    this.url = `redis://${auth}${this.host}:${port}`;
  }

  get pid(): number | undefined {
    return this.node.process.pid;
  }

  client(): Redis {
    const client = new Redis({
      host: this.host,
      port: this.port,
      password: this.options.password,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => Math.min(times * 50, 500),
    });
    client.on('error', () => undefined); // expected while a test has the server down
    this.clients.add(client);
    return client;
  }

  async kill(): Promise<void> {
    await this.node.terminate('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.node.terminate('SIGKILL');
    this.node = await spawnRedisServer({
      port: this.port,
      dir: this.dir,
      args: [
        ...(this.options.password ? ['--requirepass', this.options.password] : []),
        ...userArgs(this.options.user),
        ...(this.options.args ?? []),
      ],
      bin: this.options.bin,
      startTimeoutMs: this.options.startTimeoutMs,
    });
  }

  pause(): void {
    this.node.process.kill('SIGSTOP');
  }

  resume(): void {
    this.node.process.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const client of this.clients) client.disconnect();
    this.clients.clear();
    await this.node.terminate('SIGTERM');
    await rm(this.dir, { recursive: true, force: true });
  }
}
