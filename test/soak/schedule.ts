/**
 * The soak's fault schedule: when each fault starts, as a fraction of the load's length. They
 * do not overlap at 60 s or more (at 30 s the windows touch). The Entra throttle comes before
 * the Redis kill and the instance restart, so that "a user without a cached token" means one
 * the fleet has not cached yet (see report.ts).
 */
export type FaultName = 'redis-pause' | 'entra-429' | 'graph-503' | 'redis-kill' | 'api-restart';

export const FAULT_PLAN: readonly { name: FaultName; at: number; label: string }[] = [
  { name: 'redis-pause', at: 0.12, label: 'Redis paused 5 s (SIGSTOP)' },
  { name: 'entra-429', at: 0.3, label: 'Entra 429 burst, Retry-After 4' },
  { name: 'graph-503', at: 0.45, label: 'Graph 503 for one user, 5 s' },
  { name: 'redis-kill', at: 0.58, label: 'Redis killed (SIGKILL), restarted 3 s later' },
  { name: 'api-restart', at: 0.72, label: 'api-a SIGTERM, started again' },
];

/** Entra answers every token request 429 with this Retry-After for this many seconds. */
export const ENTRA_RETRY_AFTER_SECONDS = 4;
/** The hot user's path (test/soak/load.ts): only that user's requests reach it. */
export const GRAPH_FAULT_PATH = '/v1.0/me/messages';
/** Redis outages: a success within this long after one may not have reached L2. */
export const REDIS_SETTLE_SECONDS = 2;
