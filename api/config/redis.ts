import type { EnvReader } from './env-reader.js';

/**
 * How the service authenticates to Redis (REDIS_AUTH): `password`, from the URL (or none);
 * `entra`, with a Microsoft Entra token of its own credential for https://redis.azure.com
 * (username = the token's `oid`), as Azure Cache for Redis and Azure Managed Redis accept.
 */
type RedisAuth = 'password' | 'entra';

/** REDIS_URL as given (ioredis reads it), or a Redis Cluster; `auth` present only for `entra`. */
export type RedisConfig = ({ url: string } | RedisClusterConfig) & { auth?: 'entra' };

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
  const auth = read.oneOf('REDIS_AUTH', 'password', ['password', 'entra']);
  const url = read.optional('REDIS_URL');
  const clusterNodes = read.list('REDIS_CLUSTER_NODES');
  if (url !== undefined && clusterNodes !== undefined) {
    read.problem('REDIS_CLUSTER_NODES', 'set either REDIS_URL or REDIS_CLUSTER_NODES, not both');
    return undefined;
  }
  // With Entra the token is the password and its `oid` the user: one in the URL is a leftover access key.
  const entraConflict = 'REDIS_AUTH=entra authenticates with an Entra token: remove the user and password (the access key) from it';
  if (url !== undefined) {
    const parsed = URL.canParse(url) ? new URL(url) : undefined;
    if (!parsed || !['redis:', 'rediss:'].includes(parsed.protocol) || !parsed.hostname) {
      read.problem('REDIS_URL', 'expected redis://[user:password@]host[:port][/db] or rediss://…');
    } else if (auth === 'entra' && (parsed.username !== '' || parsed.password !== '')) {
      read.problem('REDIS_URL', entraConflict);
    }
    return { url, ...entra(auth) };
  }
  if (clusterNodes === undefined) return undefined;
  const cluster = readClusterNodes(read, clusterNodes);
  if (auth === 'entra' && (cluster.username !== undefined || cluster.password !== undefined)) read.problem('REDIS_CLUSTER_NODES', entraConflict);
  return { ...cluster, ...entra(auth) };
}

function entra(auth: RedisAuth): { auth?: 'entra' } {
  return auth === 'entra' ? { auth } : {};
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
