/**
 * Starts a real Redis Cluster of three masters (no replicas) on loopback for tests.
 *
 *   const cluster = await startRedisCluster();
 *   ... createRedisStore({ clusterNodes: cluster.nodes, ... })
 *   await cluster.stop();                      // in after(): stops every node, removes temp dirs
 *
 * Each node is a `redis-server --cluster-enabled yes` on a free port with its cluster bus on
 * another free port (`cluster-port`), in its own temp dir, without persistence. The slots are
 * assigned with `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and the
 * promise resolves once every node reports `cluster_state:ok` and knows all the others.
 * Needs `redis-server` and `redis-cli` (7.x) on PATH, or pass `bin` / `cliBin`.
 * With `password`, every node requires it (`requirepass`) from clients.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, spawnRedisServer, type SpawnedRedis } from './redis.js';

const run = promisify(execFile);

export interface RedisClusterOptions {
  /** Number of masters. Default 3 (the minimum Redis Cluster accepts). */
  masters?: number;
  bin?: string;
  cliBin?: string;
  /** requirepass for the default user on every node. */
  password?: string;
  /** How long to wait for cluster_state:ok. Default 20000 ms. */
  readyTimeoutMs?: number;
}

export interface RedisCluster {
  /** Seed nodes as host:port. */
  readonly nodes: string[];
  /** Stops every node and removes the temp dirs. Idempotent. */
  stop(): Promise<void>;
}

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const dirs: string[] = [];
  const servers: SpawnedRedis[] = [];
  const ports: number[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.terminate('SIGTERM')));
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  };
  try {
    for (let i = 0; i < masters; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'obo-redis-cluster-'));
      dirs.push(dir);
      const port = await freePort();
      const busPort = await freePort();
      servers.push(
        await spawnRedisServer({
          port,
          dir,
          bin: options.bin,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-port',
            String(busPort),
            '--cluster-node-timeout',
            '2000',
            ...(options.password ? ['--requirepass', options.password, '--masterauth', options.password] : []),
          ],
        }),
      );
      ports.push(port);
    }
    const nodes = ports.map((port) => `127.0.0.1:${port}`);
    const auth = options.password ? ['-a', options.password, '--no-auth-warning'] : [];
    await run(options.cliBin ?? 'redis-cli', [...auth, '--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 20_000,
    });
    await waitForClusterOk(ports, masters, options.readyTimeoutMs ?? 20_000, options.password);
    let stopped = false;
    return {
      nodes,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitForClusterOk(ports: number[], masters: number, timeoutMs: number, password: string | undefined): Promise<void> {
  const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port, password, maxRetriesPerRequest: 1, lazyConnect: true }));
  const deadline = Date.now() + timeoutMs;
  let last = '';
  try {
    while (Date.now() < deadline) {
      const infos = await Promise.all(clients.map((client) => client.cluster('INFO').catch((err: Error) => err.message)));
      last = infos.join(' | ');
      const ok = infos.every(
        (info) => typeof info === 'string' && info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${masters}`),
      );
      if (ok) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`Redis Cluster did not reach cluster_state:ok: ${last.slice(0, 500)}`);
  } finally {
    for (const client of clients) client.disconnect();
  }
}
