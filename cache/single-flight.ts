/** Shared with a running flight. */
export interface FlightState {
  /** The key was invalidated meanwhile: do not cache the result. */
  stale: boolean;
  /**
   * A resync (invalidations may have been missed) happened meanwhile: what the flight read from
   * L2 is not cached, and what its own create() made only after its invalidation marker says so.
   */
  resynced: boolean;
}

/**
 * At most one in-flight promise per key. A flight leaves the group when it settles; callers
 * that arrive meanwhile take `get(key)` instead of starting their own.
 */
export class FlightGroup<T> {
  private readonly flights = new Map<string, { promise: Promise<T>; state: FlightState }>();

  get(key: string): Promise<T> | undefined {
    return this.flights.get(key)?.promise;
  }

  /** Runs `run` as the key's flight. The caller has checked that none is in flight. */
  start(key: string, run: (state: FlightState) => Promise<T>): Promise<T> {
    const state: FlightState = { stale: false, resynced: false };
    const promise = run(state);
    const flight = { promise, state };
    this.flights.set(key, flight);
    const leave = () => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    promise.then(leave, leave);
    return promise;
  }

  markStale(key: string): void {
    const flight = this.flights.get(key);
    if (flight) flight.state.stale = true;
  }

  markAllResynced(): void {
    for (const flight of this.flights.values()) flight.state.resynced = true;
  }

  /** Every flight now in progress (for a bounded wait at close). */
  pending(): Promise<T>[] {
    return [...this.flights.values()].map((flight) => flight.promise);
  }
}
