/**
 * The Redis the soak's instances share, with the two faults the schedule needs: a pause
 * (SIGSTOP, a brown-out: sockets open, nothing answered) and a kill and restart.
 *
 * - single: test/support/redis.ts with a password and AOF (`appendfsync everysec`, the default), so that a
 *   killed server comes back with its data, as a managed Redis with persistence does.
 * - cluster: test/support/redis-cluster.ts (three masters). Its helper does not expose the node
 *   processes, so the faults hit the first master through its own answers: its pid (`INFO
 *   server`) for SIGSTOP/SIGKILL, and its port, `dir`, `cluster-config-file` and `cluster-port`
 *   (`CONFIG GET`) to start it again with AOF on (switched on with `CONFIG SET` before the soak),
 *   so it rejoins with its slots and its data.
 */
import { mkdir } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { startRedis, spawnRedisServer, type SpawnedRedis } from '../support/redis.js';
import { startRedisCluster } from '../support/redis-cluster.js';

export interface RedisTarget {
  kind: 'single' | 'cluster';
  /** The variables that point an instance at it. */
  env: Record<string, string>;
  password: string;
  /** What the faults hit, for the report. */
  faultTarget: string;
  pause(): Promise<void>;
  resume(): Promise<void>;
  kill(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const AOF = ['--appendonly', 'yes', '--appendfsync', 'everysec'];

export async function startRedisTarget(kind: 'single' | 'cluster', password: string): Promise<RedisTarget> {
  if (kind === 'single') {
    const redis = await startRedis({ password, args: AOF });
    return {
      kind,
      env: { REDIS_URL: redis.url },
      password,
      faultTarget: `the server (127.0.0.1:${redis.port})`,
      pause: () => Promise.resolve(redis.pause()),
      resume: () => Promise.resolve(redis.resume()),
      kill: () => redis.kill(),
      restart: () => redis.restart(),
      stop: () => redis.stop(),
    };
  }
  const cluster = await startRedisCluster({ password });
  const [host, portText] = (cluster.nodes[0] ?? '').split(':');
  const port = Number(portText);
  const admin = new Redis({ host, port, password, maxRetriesPerRequest: 1, lazyConnect: true });
  await admin.connect();
  const config = async (name: string): Promise<string> => ((await admin.config('GET', name)) as string[])[1] ?? '';
  const dir = await config('dir');
  const configFile = await config('cluster-config-file');
  const busPort = await config('cluster-port');
  await admin.config('SET', 'appendonly', 'yes');
  await admin.config('SET', 'appendfsync', 'everysec');
  const pid = Number(/process_id:(\d+)/.exec(await admin.info('server'))?.[1]);
  admin.disconnect();
  let respawned: SpawnedRedis | undefined;
  let currentPid = pid;
  const args = [
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    configFile,
    '--cluster-port',
    busPort,
    '--cluster-node-timeout',
    '2000',
    '--requirepass',
    password,
    '--masterauth',
    password,
    ...AOF,
  ];
  return {
    kind,
    env: { REDIS_CLUSTER_NODES: cluster.nodes.map((node) => `redis://:${encodeURIComponent(password)}@${node}`).join(',') },
    password,
    faultTarget: `one of three masters (127.0.0.1:${port})`,
    pause: () => Promise.resolve(void process.kill(currentPid, 'SIGSTOP')),
    resume: () => Promise.resolve(void process.kill(currentPid, 'SIGCONT')),
    kill: async () => {
      process.kill(currentPid, 'SIGKILL');
      await respawned?.exited;
      await waitForExit(currentPid);
    },
    restart: async () => {
      await mkdir(dir, { recursive: true });
      respawned = await spawnRedisServer({ port, dir, args });
      currentPid = respawned.process.pid ?? 0;
    },
    stop: async () => {
      await respawned?.terminate('SIGTERM');
      await cluster.stop();
    },
  };
}

async function waitForExit(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
