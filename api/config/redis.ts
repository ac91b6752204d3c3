import type { EnvReader } from './env-reader.js';

/** REDIS_URL as given (ioredis reads it), or a Redis Cluster. */
export type RedisConfig = { url: string } | RedisClusterConfig;

/** One ACL user, password and TLS setting apply to every node of a cluster. */
interface RedisClusterConfig {
  /** Seed nodes as `host:port` (IPv6 as `[addr]:port`). */
  clusterNodes: string[];
  username?: string;
  password?: string;
  tls?: boolean;
}

type ClusterAccess = Omit<RedisClusterConfig, 'clusterNodes'>;

/**
 * REDIS_URL or REDIS_CLUSTER_NODES (not both); undefined = no L2. These URLs do take a user and
 * a password, so no problem message ever quotes one: entries are named by position.
 */
export function readRedis(read: EnvReader): RedisConfig | undefined {
  const url = read.optional('REDIS_URL');
  const clusterNodes = read.list('REDIS_CLUSTER_NODES');
  if (url !== undefined && clusterNodes !== undefined) {
    read.problem('REDIS_CLUSTER_NODES', 'set either REDIS_URL or REDIS_CLUSTER_NODES, not both');
    return undefined;
  }
  if (url !== undefined) {
    const parsed = URL.canParse(url) ? new URL(url) : undefined;
    if (!parsed || !['redis:', 'rediss:'].includes(parsed.protocol) || !parsed.hostname) {
      read.problem('REDIS_URL', 'expected redis://[user:password@]host[:port][/db] or rediss://…');
    }
    return { url };
  }
  return clusterNodes === undefined ? undefined : readClusterNodes(read, clusterNodes);
}

/**
 * REDIS_CLUSTER_NODES entries are `host:port`, `[ipv6]:port`, or `redis[s]://[user:password@]host[:port]`
 * for an ACL user, a password and TLS. Those apply to the whole cluster: URL entries must agree,
 * and plain entries share them.
 */
function readClusterNodes(read: EnvReader, entries: string[]): RedisClusterConfig {
  const nodes: string[] = [];
  let access: ClusterAccess | undefined;
  entries.forEach((entry, index) => {
    const parsed = parseClusterNode(entry);
    if (!parsed) {
      read.problem('REDIS_CLUSTER_NODES', `entry ${index + 1}: expected host:port, [ipv6]:port or redis[s]://[user:password@]host[:port]`);
      return;
    }
    nodes.push(parsed.node);
    if (!parsed.access) return;
    if (!access) access = parsed.access;
    else if (!sameAccess(access, parsed.access)) {
      read.problem('REDIS_CLUSTER_NODES', `entry ${index + 1}: every redis:// or rediss:// entry must give the same scheme, user and password`);
    }
  });
  return { clusterNodes: nodes, ...access };
}

function parseClusterNode(entry: string): { node: string; access?: ClusterAccess } | undefined {
  const plain = /^(\[[0-9a-f:.]+\]|[^\s:/@[\]]+):(\d{1,5})$/i.exec(entry);
  if (plain) return validPort(plain[2]) ? { node: entry } : undefined;
  const url = URL.canParse(entry) ? new URL(entry) : undefined;
  if (!url || !['redis:', 'rediss:'].includes(url.protocol) || !url.hostname || url.search || url.hash) return undefined;
  if (url.pathname !== '' && url.pathname !== '/') return undefined; // a cluster has database 0 only
  const port = url.port || '6379';
  if (!validPort(port)) return undefined;
  const username = decodeUrlPart(url.username);
  const password = decodeUrlPart(url.password);
  if (username === undefined || password === undefined) return undefined;
  const access: ClusterAccess = {
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(url.protocol === 'rediss:' ? { tls: true } : {}),
  };
  return { node: `${url.hostname}:${port}`, access };
}

function decodeUrlPart(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function validPort(text: string | undefined): boolean {
  const port = Number(text);
  return Number.isInteger(port) && port > 0 && port < 65_536;
}

function sameAccess(a: ClusterAccess, b: ClusterAccess): boolean {
  return a.username === b.username && a.password === b.password && a.tls === b.tls;
}
