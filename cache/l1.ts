import { LRUCache } from 'lru-cache';
import type { CacheEntry } from './types.js';

/** What L1 holds: the parsed entry (no decode or decrypt on a hit) and its accounted size. */
export interface L1Record<V> {
  entry: CacheEntry<V>;
  bytes: number;
  /** After a failed background refresh, the next attempt waits until this time. */
  retryRefreshAt?: number;
  /** Set when this instance's own create() made the entry (not an L2 read or a peer fill): see `Created`. */
  created?: Created;
}

/** When this instance's create() of an entry started, on both clocks (a resync keeps such entries: cache/README.md). */
export interface Created {
  /** Wall clock (the cache's `now`), compared with invalidation markers written by any instance. */
  wallMs: number;
  /** performance.now(), compared with this instance's own heartbeat times. */
  monoMs: number;
}

export type L1RemovalReason = 'capacity' | 'expired';

/**
 * Accounted size of one entry, on the high side of its heap cost so that the byte budget
 * also bounds RSS (GC headroom included). Measured on Node 20 with 100k OBO-sized entries
 * (1.5 KB token, 80-char key): about 1.9 KB of heap each, accounted here as about 2.7 KB.
 * V8 keeps ASCII strings at one byte per character; the parsed object costs a little more
 * than its JSON, and the Map plus lru-cache's bookkeeping add a fixed part.
 */
export function estimateBytes(key: string, jsonLength: number): number {
  return Math.ceil(1.5 * jsonLength) + 2 * key.length + 256;
}

/** The in-process level: an LRU bounded in bytes, each entry living until its expiresAt. */
export class L1<V> {
  private readonly lru: LRUCache<string, L1Record<V>> | undefined;
  private readonly now: () => number;
  private readonly maxBytes: number;

  constructor(options: { maxBytes: number; now: () => number; onRemove?: (reason: L1RemovalReason) => void }) {
    this.now = options.now;
    this.maxBytes = options.maxBytes;
    const onRemove = options.onRemove;
    this.lru =
      options.maxBytes > 0
        ? new LRUCache<string, L1Record<V>>({
            maxSize: options.maxBytes,
            sizeCalculation: (record) => record.bytes,
            // lru-cache measures TTLs on the same clock as our expiresAt checks.
            perf: { now: options.now },
            dispose: onRemove
              ? (_value, _key, reason) => {
                  if (reason === 'evict') onRemove('capacity');
                  else if (reason === 'expire') onRemove('expired');
                }
              : undefined,
          })
        : undefined;
  }

  get(key: string): L1Record<V> | undefined {
    const record = this.lru?.get(key);
    if (record === undefined) return undefined;
    if (record.entry.expiresAt <= this.now()) {
      this.lru?.delete(key);
      return undefined;
    }
    return record;
  }

  /** Like get(), without making the entry the most recently used. */
  peek(key: string): L1Record<V> | undefined {
    const record = this.lru?.peek(key);
    if (record === undefined || record.entry.expiresAt <= this.now()) return undefined;
    return record;
  }

  /** Whether `bytes` more fit without evicting anything (replacing `key`'s record, if any). */
  hasRoomFor(key: string, bytes: number): boolean {
    if (!this.lru) return false;
    const replaced = this.lru.peek(key)?.bytes ?? 0;
    return this.lru.calculatedSize - replaced + bytes <= this.maxBytes;
  }

  set(key: string, entry: CacheEntry<V>, bytes: number, created?: Created): void {
    if (!this.lru) return;
    const ttl = entry.expiresAt - this.now();
    if (!(ttl > 0)) return;
    this.lru.set(key, created ? { entry, bytes, created } : { entry, bytes }, { ttl: Math.ceil(ttl) });
  }

  /** The live records this instance created itself, from `monoMs` on (a resync's candidates to keep). */
  createdSince(monoMs: number): [string, L1Record<V>][] {
    const found: [string, L1Record<V>][] = [];
    if (!this.lru) return found;
    const now = this.now();
    for (const [key, record] of this.lru.entries()) {
      if (record.created && record.created.monoMs >= monoMs && record.entry.expiresAt > now) found.push([key, record]);
    }
    return found;
  }

  delete(key: string): void {
    this.lru?.delete(key);
  }

  /** Drops every entry (not counted as evictions). */
  clear(): void {
    this.lru?.clear();
  }

  get entries(): number {
    return this.lru?.size ?? 0;
  }

  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }
}
