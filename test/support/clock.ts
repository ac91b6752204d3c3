/**
 * A clock for `AppDependencies.now` (and the cache's `now`): real time plus an offset that a
 * test moves forward, so "after expiry" needs no sleeping.
 *
 *   const clock = manualClock();
 *   const api = useService(emulator, {}, { now: clock.now });
 *   clock.advance(2_300);          // everything that reads `now` sees 2.3 s later
 */
export interface ManualClock {
  now: () => number;
  advance(ms: number): void;
  /** Back to real time. */
  reset(): void;
}

export function manualClock(): ManualClock {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
    reset() {
      offset = 0;
    },
  };
}
