import type { CacheDiagnostics } from './diagnostics.js';
import type { L2Store } from './l2-store.js';

/** Cache keys may not start with this: `${prefix}inv:${key}` is the invalidation marker of `key`. */
export const MARKER_NAMESPACE = 'inv:';
/**
 * How long a marker stays in L2. A resync keeps an entry created here during a gap only if it
 * was created less than this (minus `MARKER_CHECK_MARGIN_MS`) ago, so that any invalidation
 * after its creation still has its marker when it is checked.
 */
const MARKER_TTL_MS = 60 * 60 * 1000;
/** Kept off the TTL for the check's own time (command timeouts are far below this). */
const MARKER_CHECK_MARGIN_MS = 60 * 1000;
/**
 * Markers carry the invalidating instance's wall clock and are compared with this instance's:
 * an invalidation up to this long before an entry's creation still drops it, so clocks that
 * agree within this (NTP) never keep an entry invalidated after it was created.
 */
const MARKER_CLOCK_ALLOWANCE_MS = 1_000;
/** Keys per MGET. */
const CHECK_BATCH = 1_000;

/** An entry this instance created, to be checked against its key's marker. */
export interface MarkerCandidate {
  key: string;
  /** Wall-clock time its create() started. */
  createdWallMs: number;
}

/**
 * Invalidation markers: every invalidation also writes `<prefix>inv:<key>` = its wall-clock time
 * (ms), `PX` = MARKER_TTL_MS, before its PUBLISH. An instance that missed messages (a gap) asks
 * them, at its resync, whether the entries it created itself during the gap were invalidated
 * since (cache/README.md, "No lost invalidations", "Entries created during a gap").
 */
export class InvalidationMarkers {
  private readonly l2: L2Store;
  private readonly prefix: string;
  private readonly diagnostics: CacheDiagnostics;

  constructor(l2: L2Store, options: { prefix: string; diagnostics: CacheDiagnostics }) {
    this.l2 = l2;
    this.prefix = options.prefix;
    this.diagnostics = options.diagnostics;
  }

  /** Whether an entry created `ageMs` ago (monotonic) can still be proven by its marker. */
  static checkable(ageMs: number): boolean {
    return ageMs < MARKER_TTL_MS - MARKER_CHECK_MARGIN_MS;
  }

  /** Writes the marker of `key` (`atWallMs`: the invalidation's time). Whether the store took it; never throws. */
  async write(key: string, atWallMs: number): Promise<boolean> {
    try {
      await this.l2.set(this.markerKey(key), Buffer.from(String(Math.round(atWallMs))), MARKER_TTL_MS);
      return true;
    } catch (err) {
      this.diagnostics.l2Failed('set', err);
      return false;
    }
  }

  /**
   * The candidates whose key has no marker at or after (creation − MARKER_CLOCK_ALLOWANCE_MS):
   * not invalidated since they were created. Any read that fails keeps nothing of its batch
   * (fail safe: they are dropped as in any resync). Never throws.
   */
  async notInvalidated(candidates: readonly MarkerCandidate[]): Promise<Set<string>> {
    const kept = new Set<string>();
    const batches: MarkerCandidate[][] = [];
    for (let i = 0; i < candidates.length; i += CHECK_BATCH) batches.push(candidates.slice(i, i + CHECK_BATCH));
    await Promise.all(
      batches.map(async (batch) => {
        let values: (Buffer | null)[];
        try {
          values = await this.read(batch.map((candidate) => this.markerKey(candidate.key)));
        } catch (err) {
          this.diagnostics.l2Failed('get', err);
          return;
        }
        batch.forEach((candidate, i) => {
          const value = values[i];
          if (value === undefined) return;
          if (value === null) return void kept.add(candidate.key);
          const at = Number(value.toString('latin1'));
          // A marker that does not parse proves nothing: dropped.
          if (Number.isFinite(at) && at < candidate.createdWallMs - MARKER_CLOCK_ALLOWANCE_MS) kept.add(candidate.key);
        });
      }),
    );
    return kept;
  }

  /** One round trip: MGET where the store has it, else the GETs at once. */
  private async read(keys: string[]): Promise<(Buffer | null)[]> {
    if (this.l2.getMany) return this.l2.getMany(keys);
    return Promise.all(keys.map((key) => this.l2.get(key)));
  }

  private markerKey(key: string): string {
    return `${this.prefix}${MARKER_NAMESPACE}${key}`;
  }
}
