import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { describe, type CacheDiagnostics } from './diagnostics.js';
import { isRecord } from './entry-codec.js';
import type { L2Store } from './l2-store.js';

/** Default bound on how long an invalidation may go unseen (TieredCacheOptions.invalidationDelayMs). */
const DEFAULT_INVALIDATION_DELAY_MS = 5_000;
/** Heartbeats per bound: a few may be late or lost without L1 losing trust. */
const BEATS_PER_BOUND = 5;
/** After a heartbeat's PUBLISH failed, the next one goes this soon (trust comes back soon after L2 does). */
const RETRY_BEAT_MS = 200;
/** A fill is sent only this soon after its create() (a fraction of the bound); see `fillMaxAgeMs`. */
const FILL_AGE_PER_BOUND = 10;

export interface InvalidationBusOptions {
  prefix: string;
  closing: AbortSignal;
  log: Logger;
  diagnostics: CacheDiagnostics;
  /** Drop the L1 copy of a key another instance invalidated. */
  onRemote: (key: string) => void;
  /**
   * Messages may have been lost: drop the L1 entries (and keep loads in flight from caching),
   * but for those the cache proves current (its own creations, against their invalidation markers).
   */
  onResync: () => void;
  /** After every confirmed delivery (heartbeat echo), once any resync it needed is done. */
  onSynced?: () => void;
  /**
   * Peer fill: another instance created the entry of `key`; `sealed` is its L2 envelope. Given,
   * the bus subscribes to `<prefix>fill` too. `blocked`: the fill must not be used, since it may
   * undo an invalidation (see the class comment); told only to be counted.
   */
  onFill?: (key: string, sealed: Buffer, blocked: boolean) => void;
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
 *   was published never came back within 2 × delayMs while a later one did), the next echo first calls `onResync`: L1 entries from
 *   before the gap are dropped, since any of them may have been invalidated meanwhile.
 * - Peer fills (`publishFill`, `onFill`) on `<prefix>fill`, same connection: an entry another
 *   instance created, in its L2 envelope, sent at most `fillMaxAgeMs` after its create(). A
 *   fill is not used during a gap, within twice that after a resync (start-up included), or
 *   within delayMs after its key was invalidated here, so that a fill sent before an
 *   invalidation but delivered after it cannot bring the old entry back.
 */
export class InvalidationBus {
  private readonly l2: L2Store;
  private readonly channel: string;
  private readonly heartbeatChannel: string;
  private readonly fillChannel: string;
  /** Tags our own messages so we can ignore their echo. */
  private readonly instanceId = randomUUID();
  private readonly closing: AbortSignal;
  private readonly log: Logger;
  private readonly diagnostics: CacheDiagnostics;
  private readonly onRemote: (key: string) => void;
  private readonly onResync: () => void;
  private readonly onSynced: () => void;
  private readonly onFill: ((key: string, sealed: Buffer, blocked: boolean) => void) | undefined;
  readonly delayMs: number;
  /** The sender's bound from create() to a fill's PUBLISH (delayMs / 10). */
  readonly fillMaxAgeMs: number;
  private readonly unsubscribes: (() => Promise<void>)[] = [];
  /** performance.now() of this instance's last invalidation of each key (local or remote), kept for delayMs. */
  private readonly invalidatedAt = new Map<string, number>();
  /** performance.now() before which no fill is handed on (set by a resync). */
  private fillsQuietUntil = 0;
  private subscribed = false;
  /** performance.now() before which L1 entries are trusted. */
  private trustedUntil = 0;
  /** performance.now() at which the last echoed heartbeat was sent. */
  private lastSyncAt: number | undefined;
  /** Messages may have been lost since the last sync (and before the first one). */
  private gap = true;
  private seq = 0;
  /** Heartbeats sent and not yet echoed; `published` once the store confirmed the PUBLISH. */
  private readonly outstanding = new Map<number, { sentAt: number; published: boolean; echoed: boolean }>();
  private beatTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Told at the next confirmed delivery (see `nextSync`). */
  private readonly syncWaiters = new Set<() => void>();
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
    this.fillChannel = `${options.prefix}fill`;
    this.closing = options.closing;
    this.log = options.log;
    this.diagnostics = options.diagnostics;
    this.onRemote = options.onRemote;
    this.onResync = options.onResync;
    this.onSynced = options.onSynced ?? (() => undefined);
    this.onFill = options.onFill;
    this.delayMs = options.delayMs ?? DEFAULT_INVALIDATION_DELAY_MS;
    this.fillMaxAgeMs = this.delayMs / FILL_AGE_PER_BOUND;
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

  /**
   * performance.now() at which the last echoed heartbeat was sent: every invalidation Redis
   * executed before it has arrived. Read in `onResync`, it is the last confirmation before the
   * gap (undefined: none since start-up).
   */
  get lastSyncMonoMs(): number | undefined {
    return this.lastSyncAt;
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

  /** Whether peer fills are on (the bus was given `onFill`). */
  get fills(): boolean {
    return this.onFill !== undefined;
  }

  /** Hands the other instances the entry of `key` we just created, in its L2 envelope. Never throws. */
  publishFill(key: string, sealed: Buffer): Promise<void> {
    if (!this.onFill) return Promise.resolve();
    const message = JSON.stringify({ o: this.instanceId, k: key, e: sealed.toString('base64') });
    return this.diagnostics.l2Call('publish', () => this.l2.publish(this.fillChannel, message));
  }

  /** `key` was invalidated here (by us or by another instance): fills of it are not handed on for delayMs. */
  noteInvalidated(key: string): void {
    if (!this.onFill) return;
    this.invalidatedAt.delete(key); // re-inserted last: the map stays in time order for pruning
    this.invalidatedAt.set(key, performance.now());
  }

  async close(): Promise<void> {
    if (this.beatTimer) clearInterval(this.beatTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const waiter of this.syncWaiters) waiter();
    await Promise.all(this.unsubscribes.map((unsubscribe) => unsubscribe().catch(() => undefined)));
  }

  /** Subscribes, retrying with a bounded backoff until it works or the cache closes. */
  private async subscribe(): Promise<void> {
    const interrupted = () => this.interrupted('the subscriber connection dropped');
    // All on the store's one subscriber connection: the heartbeat's echo comes after every message published before it.
    const channels: [string, (message: string) => void, (() => void) | undefined][] = [
      [this.channel, (message) => this.receive(message), interrupted],
      ...(this.onFill
        ? [[this.fillChannel, (message: string) => this.filled(message), undefined] as [string, (message: string) => void, undefined]]
        : []),
      [this.heartbeatChannel, (message) => this.echoed(message), undefined],
    ];
    for (let attempt = 0; !this.closing.aborted; attempt++) {
      try {
        // The ones a failed attempt subscribed already are kept.
        for (const [channel, listener, onInterrupted] of channels.slice(this.unsubscribes.length)) {
          this.unsubscribes.push(await this.l2.subscribe(channel, listener, onInterrupted));
        }
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
    // Beats that never came back within twice the bound are not waited for any more. One that was
    // published while a later one came back was lost, not merely late: messages may be missing.
    let lost = false;
    for (const [seq, beat] of this.outstanding) {
      if (now - beat.sentAt <= 2 * this.delayMs) break; // in the order they were sent
      if (beat.echoed) continue; // waiting behind a missing one: confirm() takes it
      this.outstanding.delete(seq);
      if (beat.published && [...this.outstanding.values()].some((later) => later.echoed)) lost = true;
    }
    if (lost) this.interrupted('a heartbeat was lost');
    this.confirm();
    for (const [key, at] of this.invalidatedAt) {
      if (now - at <= this.delayMs) break;
      this.invalidatedAt.delete(key);
    }
    const seq = ++this.seq;
    const beat = { sentAt: now, published: false, echoed: false };
    this.outstanding.set(seq, beat);
    // Quietly: a store that is down is reported by its own health, and trust simply lapses.
    this.l2.publish(this.heartbeatChannel, String(seq)).then(
      () => {
        beat.published = true;
      },
      () => {
        this.outstanding.delete(seq);
        if (this.retryTimer || this.closing.aborted) return;
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.beat();
        }, RETRY_BEAT_MS);
        this.retryTimer.unref();
      },
    );
  }

  private echoed(message: string): void {
    const seq = Number(message);
    const beat = this.outstanding.get(seq);
    if (!beat || beat.echoed) return; // a duplicate (while the subscriber is replaced), or given up on
    beat.echoed = true;
    // Sent before it and not confirmed published: its PUBLISH failed, or comes too late to matter.
    for (const [earlier, other] of this.outstanding) if (earlier < seq && !other.published && !other.echoed) this.outstanding.delete(earlier);
    this.confirm();
  }

  /**
   * Trust moves up to the last echoed heartbeat with none published before it still missing. A
   * missing one may be late rather than lost: on a Redis Cluster each PUBLISH goes to some node,
   * and one that node relays reaches the subscriber's node after a later one published there
   * directly (or after a pause of that node). So it is waited for (trust meanwhile lapses, and
   * L1 hits are re-checked) until it arrives, or is given up as lost in beat().
   */
  private confirm(): void {
    let last: { sentAt: number } | undefined;
    let lastSeq = 0;
    // During a gap the resync covers whatever a missing beat could prove, so none is waited for:
    // a beat published while the subscriber was still re-subscribing can never come back.
    const resyncing = this.gap;
    for (const [seq, beat] of this.outstanding) {
      if (!beat.echoed) {
        if (beat.published && !resyncing) break;
        continue;
      }
      this.outstanding.delete(seq);
      last = beat;
      lastSeq = seq;
    }
    if (!last) return;
    if (this.gap) {
      for (const seq of this.outstanding.keys()) if (seq < lastSeq) this.outstanding.delete(seq);
      this.gap = false;
      this.resyncs += 1;
      this.onResync();
      // A fill sent before an invalidation we missed may still be on its way (see class comment).
      this.fillsQuietUntil = performance.now() + 2 * this.fillMaxAgeMs;
      if (this.lastSyncAt !== undefined)
        this.log.info('cache: invalidations flowing again; dropped L1 entries from before the gap (but ours not invalidated since)');
    }
    this.lastSyncAt = last.sentAt;
    this.trustedUntil = last.sentAt + this.delayMs;
    this.markSynced();
    this.onSynced();
    for (const waiter of [...this.syncWaiters]) waiter();
  }

  /**
   * Resolves true at the next confirmed delivery (a heartbeat echo, after any resync), false
   * after `timeoutMs` or at close. From then on, every invalidation Redis executed before now
   * has arrived.
   */
  nextSync(timeoutMs: number): Promise<boolean> {
    if (this.closing.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (synced: boolean) => {
        clearTimeout(timer);
        this.syncWaiters.delete(waiter);
        resolve(synced && !this.closing.aborted);
      };
      const waiter = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      timer.unref();
      this.syncWaiters.add(waiter);
    });
  }

  private interrupted(why: string): void {
    if (!this.gap && this.lastSyncAt !== undefined)
      this.log.warn({ why }, 'cache: invalidations may have been missed; L1 entries are re-checked against L2 until the subscriber is back');
    this.gap = true;
    this.trustedUntil = 0;
    // Heartbeats sent before this will never prove anything: the next echoed one ends the gap.
    this.outstanding.clear();
  }

  private receive(message: string): void {
    const parsed = parse(message);
    if (!parsed) {
      this.diagnostics.warn('invalidation:malformed', {}, 'cache: ignored a malformed invalidation message');
      return;
    }
    if (parsed.o === this.instanceId) return;
    this.noteInvalidated(parsed.k);
    this.onRemote(parsed.k);
  }

  private filled(message: string): void {
    const parsed = parse(message);
    if (!parsed || typeof parsed.e !== 'string') {
      this.diagnostics.warn('fill:malformed', {}, 'cache: ignored a malformed peer fill message');
      return;
    }
    if (parsed.o === this.instanceId || !this.onFill) return;
    const now = performance.now();
    const invalidatedAt = this.invalidatedAt.get(parsed.k);
    const blocked = this.gap || now < this.fillsQuietUntil || (invalidatedAt !== undefined && now - invalidatedAt <= this.delayMs);
    this.onFill(parsed.k, Buffer.from(parsed.e, 'base64'), blocked);
  }
}

/** A bus message: `o` the sender, `k` the key, and a fill's envelope `e`; undefined when malformed. */
function parse(message: string): { o: string; k: string; e?: unknown } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (!isRecord(parsed) || typeof parsed.o !== 'string' || typeof parsed.k !== 'string') return undefined;
  return { o: parsed.o, k: parsed.k, e: parsed.e };
}
