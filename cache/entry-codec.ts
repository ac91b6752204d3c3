/** Converts entries to and from the plaintext that the L2 envelope seals. */
import { CacheEntryError, EnvelopeError } from './errors.js';
import type { CacheEntry } from './types.js';

/** The L2 plaintext: {"v": value, "e": expiresAt, "r": refreshAt}. Also validates the entry. */
export function serialise<V>(entry: CacheEntry<V>): string {
  if (!isRecord(entry) || !Number.isFinite(entry.expiresAt)) throw new CacheEntryError('create() must resolve to { value, expiresAt (epoch ms) }');
  if (entry.refreshAt !== undefined && !Number.isFinite(entry.refreshAt)) throw new CacheEntryError('refreshAt must be epoch ms when given');
  try {
    return JSON.stringify({ v: entry.value, e: entry.expiresAt, r: entry.refreshAt });
  } catch {
    throw new CacheEntryError('the cached value must be JSON-serialisable');
  }
}

export function deserialise<V>(text: string): CacheEntry<V> {
  const parsed: unknown = JSON.parse(text);
  if (!isRecord(parsed) || typeof parsed.e !== 'number' || !('v' in parsed) || (parsed.r !== undefined && typeof parsed.r !== 'number')) {
    throw new EnvelopeError('malformed', 'opened value is not a cache entry');
  }
  const entry: CacheEntry<V> = { value: parsed.v as V, expiresAt: parsed.e };
  if (typeof parsed.r === 'number') entry.refreshAt = parsed.r;
  return entry;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
