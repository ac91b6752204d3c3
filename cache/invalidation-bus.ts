import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { describe, type CacheDiagnostics } from './diagnostics.js';
import { isRecord } from './entry-codec.js';
import type { L2Store } from './l2-store.js';

/** Default bound on how long an invalidation may go unseen (TieredCacheOptions.invalidationDelayMs). */
export const DEFAULT_INVALIDATION_DELAY_MS = 5_000;
/** Heartbeats per bound: a few may be late or lost without L1 losing trust. */
const BEATS_PER_BOUND = 5;

export interface InvalidationBusOptions {
  prefix: string;
  closing: AbortSignal;
  log: Logger;
  diagnostics: CacheDiagnostics;
  /** Drop the L1 copy of a key another instance invalidated. */
  onRemote: (key: string) => void;
  /** Messages may have been lost: drop every L1 entry (and keep loads in flight from caching). */
  onResync: () => void;
  /** How long after the last confirmed delivery L1 entries are still trusted. */
  delayMs?: number;
}

/**
 * Cross-instance invalidation over the L2 store's pub/sub channel `<prefix>invalidate`, with
 * delivery confirmed, so that no invalidation goes unseen for longer than `delayMs`
 * (cache/README.md, "No lost invalidations", explains why):
 * - `publish(key)` sends `{"o": instanceId, "k": key}`; every other instance hands the key to
 *   `onRemote`, which drops the L1 copy. An instance ignores the echo of its own messages.
 * - Every delayMs/5 the bus publishes a heartbeat on a channel of its own, received on the same
 *   subscriber connection. Its echo proves that every invalidation published before it has
 *   arrived: `trusted()` stays true until delayMs after the send time of the last echoed one.
 * - When messages may have been lost (the subscriber connection dropped, or a heartbeat that
 *   was published never came back), the next echo first calls `onResync`: L1 entries from
 *   before the gap are dropped, since any of them may have been invalidated meanwhile.
 */
export class InvalidationBus {
  private readonly l2: L2Store;
  private readonly channel: string;
  private readonly heartbeatChannel: string;
  /** Tags our own messages so we can ignore their echo. */
  private readonly instanceId = randomUUID();
  private readonly closing: AbortSignal;
  private readonly log: Logger;
  private readonly diagnostics: CacheDiagnostics;
  private readonly onRemote: (key: string) => void;
  private readonly onResync: () => void;
  readonly delayMs: number;
  private readonly unsubscribes: (() => Promise<void>)[] = [];
  private subscribed = false;
  /** performance.now() before which L1 entries are trusted. */
  private trustedUntil = 0;
  /** performance.now() at which the last echoed heartbeat was sent. */
  private lastSyncAt: number | undefined;
  /** Messages may have been lost since the last sync (and before the first one). */
  private gap = true;
  private seq = 0;
  /** Heartbeats sent and not yet echoed; `published` once the store confirmed the PUBLISH. */
  private readonly outstanding = new Map<number, { sentAt: number; published: boolean }>();
  private beatTimer: NodeJS.Timeout | undefined;
  /** Times L1 was dropped after a gap. */
  resyncs = 0;
  private markSynced: () => void = () => undefined;
  private readonly firstSync = new Promise<void>((resolve) => {
    this.markSynced = resolve;
  });
  /** Settles once the subscription is active and its first heartbeat came back, or the cache closed first. */
  readonly started: Promise<void>;

  constructor(l2: L2Store, options: InvalidationBusOptions) {
    this.l2 = l2;
    this.channel = `${options.prefix}invalidate`;
    this.heartbeatChannel = `${options.prefix}invalidate:heartbeat:${this.instanceId}`;
    this.closing = options.closing;
    this.log = options.log;
    this.diagnostics = options.diagnostics;
    this.onRemote = options.onRemote;
    this.onResync = options.onResync;
    this.delayMs = options.delayMs ?? DEFAULT_INVALIDATION_DELAY_MS;
    this.started = this.subscribe();
  }

  /** Whether the subscription has been set up (the store re-subscribes after reconnects). */
  get active(): boolean {
    return this.subscribed;
  }

  /** On every L1 hit: may L1 entries be served without asking L2? One clock read, no I/O. */
  trusted(): boolean {
    return performance.now() < this.trustedUntil;
  }

  /** For /readyz and metrics: whether deliveries are confirmed, and how long since the last confirmation. */
  status(): { flowing: boolean; lastSyncAgeMs: number | undefined } {
    const lastSyncAt = this.lastSyncAt;
    return { flowing: this.trusted(), lastSyncAgeMs: lastSyncAt === undefined ? undefined : performance.now() - lastSyncAt };
  }

  /** Tells the other instances to drop their L1 copy of `key`. Never throws. */
  publish(key: string): Promise<void> {
    return this.diagnostics.l2Call('publish', () => this.l2.publish(this.channel, JSON.stringify({ o: this.instanceId, k: key })));
  }

  async close(): Promise<void> {
    if (this.beatTimer) clearInterval(this.beatTimer);
    await Promise.all(this.unsubscribes.map((unsubscribe) => unsubscribe().catch(() => undefined)));
  }

  /** Subscribes, retrying with a bounded backoff until it works or the cache closes. */
  private async subscribe(): Promise<void> {
    const interrupted = () => this.interrupted('the subscriber connection dropped');
    for (let attempt = 0; !this.closing.aborted; attempt++) {
      try {
        // Both on the store's one subscriber connection: the heartbeat's echo comes after every message published before it.
        if (this.unsubscribes.length === 0) this.unsubscribes.push(await this.l2.subscribe(this.channel, (message) => this.receive(message), interrupted));
        this.unsubscribes.push(await this.l2.subscribe(this.heartbeatChannel, (message) => this.echoed(message)));
        this.subscribed = true;
        if (this.closing.aborted) return await this.close();
        this.startHeartbeats();
        const closed = new Promise<void>((resolve) => this.closing.addEventListener('abort', () => resolve(), { once: true }));
        return await Promise.race([this.firstSync, closed]);
      } catch (err) {
        if (attempt === 0) this.log.warn({ error: describe(err) }, 'cache: could not subscribe to invalidations yet; retrying');
        // close() cuts the wait short.
        await sleep(Math.min(250 * 2 ** attempt, 5_000), undefined, { ref: false, signal: this.closing }).catch(() => undefined);
      }
    }
  }

  private startHeartbeats(): void {
    const every = Math.max(10, Math.floor(this.delayMs / BEATS_PER_BOUND));
    this.beat();
    this.beatTimer = setInterval(() => this.beat(), every);
    this.beatTimer.unref();
  }

  private beat(): void {
    if (this.closing.aborted) return;
    const now = performance.now();
    // Beats that never came back within twice the bound are not waited for any more.
    for (const [seq, beat] of this.outstanding) if (now - beat.sentAt > 2 * this.delayMs) this.outstanding.delete(seq);
    const seq = ++this.seq;
    const beat = { sentAt: now, published: false };
    this.outstanding.set(seq, beat);
    // Quietly: a store that is down is reported by its own health, and trust simply lapses.
    this.l2.publish(this.heartbeatChannel, String(seq)).then(
      () => {
        beat.published = true;
      },
      () => this.outstanding.delete(seq),
    );
  }

  private echoed(message: string): void {
    const seq = Number(message);
    const beat = this.outstanding.get(seq);
    if (!beat) return; // a duplicate (while the subscriber is replaced), or given up on
    for (const [earlier, other] of this.outstanding) {
      if (earlier > seq) continue;
      // Published before this one, on the same connection, yet not delivered: lost.
      if (earlier < seq && other.published) this.interrupted('a heartbeat was lost');
      this.outstanding.delete(earlier);
    }
    if (this.gap) {
      this.gap = false;
      this.resyncs += 1;
      this.onResync();
      if (this.lastSyncAt !== undefined) this.log.info('cache: invalidations flowing again; dropped L1 entries from before the gap');
    }
    this.lastSyncAt = beat.sentAt;
    this.trustedUntil = beat.sentAt + this.delayMs;
    this.markSynced();
  }

  private interrupted(why: string): void {
    if (!this.gap && this.lastSyncAt !== undefined) this.log.warn({ why }, 'cache: invalidations may have been missed; L1 entries are re-checked against L2 until the subscriber is back');
    this.gap = true;
    this.trustedUntil = 0;
  }

  private receive(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = undefined;
    }
    if (!isRecord(parsed) || typeof parsed.o !== 'string' || typeof parsed.k !== 'string') {
      this.diagnostics.warn('invalidation:malformed', {}, 'cache: ignored a malformed invalidation message');
      return;
    }
    if (parsed.o === this.instanceId) return;
    this.onRemote(parsed.k);
  }
}
