import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { CacheConfigError, L2TimeoutError, L2UnavailableError, type L2Op } from './errors.js';
import type { EnvelopeError } from './errors.js';
import type { BreakerState } from './l2-store.js';
import type { L1RemovalReason } from './l1.js';

export type CreateTrigger = 'miss' | 'force' | 'refresh';
export type RefreshResult = 'ok' | 'error' | 'adopted' | 'skipped';
type PeerFillResult = 'applied' | 'blocked' | 'kept_newer' | 'no_room' | 'unusable';
type WriteBackResult = 'ok' | 'error' | 'superseded';

/** Read at scrape time, so the hot path never touches a gauge. */
export interface MetricSources {
  l1Entries(): number;
  l1Bytes(): number;
  l1MaxBytes: number;
  /** undefined when there is no L2. */
  l2(): { up: boolean; breaker: BreakerState } | undefined;
  /** undefined when there is no L2. */
  invalidations(): { flowing: boolean; lastSyncAgeMs: number | undefined } | undefined;
}

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };
const L2_OPS: readonly L2Op[] = ['get', 'set', 'del', 'lock', 'unlock', 'publish'];
const DECRYPT_FAILURES: readonly EnvelopeError['reason'][] = ['auth_failed', 'unknown_kid', 'malformed', 'plaintext_refused', 'encrypted_refused'];

/**
 * The obo_cache_* metrics of one cache, registered on the app's registry (never the global
 * one). Per getOrCreate call exactly one of these moves: hits{l1}, hits{l2}, joins{process},
 * joins{cluster} or creates{trigger="miss"|"force"} (the last two for the caller that ran the
 * flight). Label children are resolved once so the hot path is a plain increment.
 */
export class CacheMetrics {
  readonly l1Hit: Counter.Internal;
  readonly l2Hit: Counter.Internal;
  readonly miss: Counter.Internal;
  readonly joinProcess: Counter.Internal;
  readonly joinCluster: Counter.Internal;
  readonly lockWaitTimeout: Counter.Internal;
  readonly l1Rechecked: Counter;
  readonly resynced: Counter;
  /** Entries this instance created during a gap, at the resync: kept (no marker since) or dropped. */
  readonly resyncChecked: Counter<'result'>;
  private readonly creates: Counter<'trigger' | 'result'>;
  private readonly createSeconds: Histogram<'trigger'>;
  private readonly l1Removals: Counter<'reason'>;
  private readonly l2Errors: Counter<'op' | 'kind'>;
  private readonly l2Skipped: Counter<'op' | 'reason'>;
  private readonly decryptFailures: Counter<'reason'>;
  private readonly refreshes: Counter<'result'>;
  private readonly invalidations: Counter<'origin'>;
  private readonly startupWaits: Counter<'result'>;
  private readonly peerFills: Counter<'result'>;
  private readonly writeBacks: Counter<'result'>;
  private readonly registry: Registry;

  constructor(registry: Registry, sources: MetricSources) {
    this.registry = registry;
    if (registry.getSingleMetric('obo_cache_hits_total')) {
      throw new CacheConfigError('this registry already holds obo_cache_* metrics: use one registry per cache');
    }
    const registers = [registry];
    const hits = new Counter({
      name: 'obo_cache_hits_total',
      help: 'getOrCreate calls answered from a cache level',
      labelNames: ['level'] as const,
      registers,
    });
    this.l1Hit = hits.labels({ level: 'l1' });
    this.l2Hit = hits.labels({ level: 'l2' });
    this.miss = new Counter({
      name: 'obo_cache_misses_total',
      help: 'Lookups (one per in-process flight) that found no usable entry in L1 or L2 and went on to create or wait for another instance',
      registers,
    });
    const joins = new Counter({
      name: 'obo_cache_joins_total',
      help: "getOrCreate calls that took another caller's in-flight result: scope=process (same process) or cluster (another instance's create, through L2)",
      labelNames: ['scope'] as const,
      registers,
    });
    this.joinProcess = joins.labels({ scope: 'process' });
    this.joinCluster = joins.labels({ scope: 'cluster' });
    this.lockWaitTimeout = new Counter({
      name: 'obo_cache_lock_wait_timeouts_total',
      help: "Waits for another instance's create() that ran out (the waiter then made its own)",
      registers,
    });
    this.creates = new Counter({
      name: 'obo_cache_creates_total',
      help: 'create() invocations by trigger (miss, force = forceRefresh, refresh = background refresh-ahead) and result',
      labelNames: ['trigger', 'result'] as const,
      registers,
    });
    this.createSeconds = new Histogram({
      name: 'obo_cache_create_duration_seconds',
      help: 'Duration of create() (for the token cache: the exchange)',
      labelNames: ['trigger'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.l1Removals = new Counter({
      name: 'obo_cache_l1_evictions_total',
      help: 'L1 entries removed by the cache itself: reason=capacity (byte budget) or expired',
      labelNames: ['reason'] as const,
      registers,
    });
    new Gauge({
      name: 'obo_cache_l1_entries',
      help: 'Entries in L1',
      registers,
      collect() {
        this.set(sources.l1Entries());
      },
    });
    new Gauge({
      name: 'obo_cache_l1_bytes',
      help: 'Accounted size of L1 in bytes (an estimate on the high side of the heap it holds)',
      registers,
      collect() {
        this.set(sources.l1Bytes());
      },
    });
    new Gauge({ name: 'obo_cache_l1_max_bytes', help: 'L1 byte budget (0 = L1 disabled)', registers }).set(sources.l1MaxBytes);
    this.l2Errors = new Counter({
      name: 'obo_cache_l2_errors_total',
      help: 'L2 operations that failed: kind=timeout (exceeded the command timeout) or error',
      labelNames: ['op', 'kind'] as const,
      registers,
    });
    this.l2Skipped = new Counter({
      name: 'obo_cache_l2_skipped_total',
      help: 'L2 operations not attempted: reason=breaker_open, disconnected or closed',
      labelNames: ['op', 'reason'] as const,
      registers,
    });
    new Gauge({
      name: 'obo_cache_l2_breaker_state',
      help: 'L2 circuit breaker: 0 closed, 1 half-open, 2 open (-1 = no L2)',
      registers,
      collect() {
        const l2 = sources.l2();
        this.set(l2 ? BREAKER_VALUE[l2.breaker] : -1);
      },
    });
    new Gauge({
      name: 'obo_cache_l2_up',
      help: 'L2 connected and not degraded: 1 up, 0 degraded (-1 = no L2)',
      registers,
      collect() {
        const l2 = sources.l2();
        this.set(l2 ? (l2.up ? 1 : 0) : -1);
      },
    });
    this.decryptFailures = new Counter({
      name: 'obo_cache_decrypt_failures_total',
      help: 'L2 values that did not open and were treated as misses, by reason',
      labelNames: ['reason'] as const,
      registers,
    });
    this.refreshes = new Counter({
      name: 'obo_cache_refreshes_total',
      help: 'Background refreshes of entries past refreshAt: ok, error (old entry kept), adopted (another instance had refreshed it), skipped (another instance is refreshing it)',
      labelNames: ['result'] as const,
      registers,
    });
    this.invalidations = new Counter({
      name: 'obo_cache_invalidations_total',
      help: 'L1 invalidations: origin=local (this instance) or remote (pub/sub from another instance)',
      labelNames: ['origin'] as const,
      registers,
    });
    new Gauge({
      name: 'obo_cache_invalidations_flowing',
      help: 'Invalidation deliveries confirmed within the bound (a heartbeat echoed on the subscriber connection): 1 yes, 0 no, so L1 hits are re-checked against L2 (-1 = no L2)',
      registers,
      collect() {
        const state = sources.invalidations();
        this.set(state ? (state.flowing ? 1 : 0) : -1);
      },
    });
    new Gauge({
      name: 'obo_cache_invalidations_last_sync_age_seconds',
      help: 'Seconds since the invalidation subscriber was last confirmed connected and delivering (-1 = never, or no L2)',
      registers,
      collect() {
        const age = sources.invalidations()?.lastSyncAgeMs;
        this.set(age === undefined ? -1 : age / 1000);
      },
    });
    this.l1Rechecked = new Counter({
      name: 'obo_cache_l1_rechecks_total',
      help: 'L1 entries re-checked against L2 before being served, because invalidations were not confirmed flowing',
      registers,
    });
    this.resynced = new Counter({
      name: 'obo_cache_invalidation_resyncs_total',
      help: 'Times L1 was dropped because invalidations may have been missed (the subscriber was disconnected, or a heartbeat was lost)',
      registers,
    });
    this.resyncChecked = new Counter({
      name: 'obo_cache_resync_created_total',
      help: 'Entries this instance created during an invalidation gap, checked against their invalidation markers at the resync: kept (none since their creation) or dropped (a marker, or the check failed)',
      labelNames: ['result'],
      registers,
    });

    this.startupWaits = new Counter({
      name: 'obo_cache_l2_startup_waits_total',
      help: "Misses that waited for L2's first connection after start (l2StartupWaitMs): result=connected or timed_out (then created without L2)",
      labelNames: ['result'] as const,
      registers,
    });

    this.peerFills = new Counter({
      name: 'obo_cache_peer_fills_total',
      help: "Entries another instance created and sent (peer fill): applied to L1, blocked (a recent invalidation or resync), kept_newer (L1's was as new), no_room (L1 full; fills never evict), unusable (did not open, or expired)",
      labelNames: ['result'] as const,
      registers,
    });
    this.writeBacks = new Counter({
      name: 'obo_cache_l2_writebacks_total',
      help: 'Entries created while L2 was unreachable, written to L2 once invalidations flowed again: ok, error (kept for the next try), superseded (L1 no longer held it)',
      labelNames: ['result'] as const,
      registers,
    });

    // Zero-initialise the label sets dashboards and alerts rely on (rate() misses a series'
    // first increment). prom-client creates a series on inc(), not on labels().
    for (const child of [this.l1Hit, this.l2Hit, this.joinProcess, this.joinCluster]) child.inc(0);
    for (const reason of ['capacity', 'expired'] as const) this.l1Removals.labels({ reason }).inc(0);
    for (const op of L2_OPS) for (const kind of ['timeout', 'error'] as const) this.l2Errors.labels({ op, kind }).inc(0);
    for (const result of ['ok', 'error', 'adopted', 'skipped'] as const) this.refreshes.labels({ result }).inc(0);
    for (const origin of ['local', 'remote'] as const) this.invalidations.labels({ origin }).inc(0);
    for (const result of ['connected', 'timed_out'] as const) this.startupWaits.labels({ result }).inc(0);
    for (const result of ['applied', 'blocked', 'kept_newer', 'no_room', 'unusable'] as const) this.peerFills.labels({ result }).inc(0);
    for (const result of ['ok', 'error', 'superseded'] as const) this.writeBacks.labels({ result }).inc(0);
    for (const reason of DECRYPT_FAILURES) this.decryptFailures.labels({ reason }).inc(0);
    for (const trigger of ['miss', 'force', 'refresh'] as const) {
      for (const result of ['ok', 'error'] as const) this.creates.labels({ trigger, result }).inc(0);
    }
  }

  /** Removes this cache's metrics from the registry (at close), so a new cache may register them. */
  unregister(): void {
    for (const metric of this.registry.getMetricsAsArray()) {
      if (metric.name.startsWith('obo_cache_')) this.registry.removeSingleMetric(metric.name);
    }
  }

  created(trigger: CreateTrigger, ok: boolean, seconds: number): void {
    this.creates.labels({ trigger, result: ok ? 'ok' : 'error' }).inc();
    this.createSeconds.labels({ trigger }).observe(seconds);
  }

  l1Removed(reason: L1RemovalReason): void {
    this.l1Removals.labels({ reason }).inc();
  }

  l2Failed(op: L2Op, err: unknown): void {
    if (err instanceof L2UnavailableError) this.l2Skipped.labels({ op, reason: err.reason }).inc();
    else this.l2Errors.labels({ op, kind: err instanceof L2TimeoutError ? 'timeout' : 'error' }).inc();
  }

  decryptFailed(reason: EnvelopeError['reason']): void {
    this.decryptFailures.labels({ reason }).inc();
  }

  refreshed(result: RefreshResult): void {
    this.refreshes.labels({ result }).inc();
  }

  l2StartupWaited(result: 'connected' | 'timed_out'): void {
    this.startupWaits.labels({ result }).inc();
  }

  peerFilled(result: PeerFillResult): void {
    this.peerFills.labels({ result }).inc();
  }

  wroteBack(result: WriteBackResult, count = 1): void {
    this.writeBacks.labels({ result }).inc(count);
  }

  invalidated(origin: 'local' | 'remote'): void {
    this.invalidations.labels({ origin }).inc();
  }
}
