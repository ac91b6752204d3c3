import type { BreakerState } from './l2-store.js';

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. Default 5. */
  failureThreshold?: number;
  /** How long it stays open before letting one probe through (half-open). Default 5000 ms. */
  openMs?: number;
}

const BREAKER_DEFAULTS = { failureThreshold: 5, openMs: 5000 } as const;

/**
 * A consecutive-failure circuit breaker. Closed: everything passes. Open: nothing passes
 * until openMs has elapsed. Half-open: exactly one probe passes; its success closes the
 * breaker, its failure re-opens it for another openMs.
 */
export class CircuitBreaker {
  private readonly threshold: number;
  private readonly openMs: number;
  private readonly clock: () => number;
  private readonly onChange: (from: BreakerState, to: BreakerState) => void;
  private current: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing = false;

  constructor(
    options: BreakerOptions = {},
    onChange: (from: BreakerState, to: BreakerState) => void = () => {},
    clock: () => number = () => performance.now(),
  ) {
    this.threshold = Math.max(1, Math.floor(options.failureThreshold ?? BREAKER_DEFAULTS.failureThreshold));
    this.openMs = Math.max(0, options.openMs ?? BREAKER_DEFAULTS.openMs);
    this.clock = clock;
    this.onChange = onChange;
  }

  get state(): BreakerState {
    return this.current;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Milliseconds until an open breaker lets a probe through (0 when not open). */
  get msUntilProbe(): number {
    return this.current === 'open' ? Math.max(0, this.openedAt + this.openMs - this.clock()) : 0;
  }

  /** Whether a call may go through now. In half-open, only the first caller gets true. */
  allow(): boolean {
    if (this.current === 'closed') return true;
    if (this.current === 'open') {
      if (this.clock() - this.openedAt < this.openMs) return false;
      this.transition('half-open');
    }
    if (this.probing) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
    if (this.current !== 'closed') this.transition('closed');
  }

  failure(): void {
    this.probing = false;
    this.failures++;
    if (this.current === 'half-open' || (this.current === 'closed' && this.failures >= this.threshold)) {
      this.openedAt = this.clock();
      this.transition('open');
    }
  }

  /**
   * An outcome that says nothing about the store's health in closed state (it was not even
   * attempted, e.g. disconnected), but must end a half-open probe: it re-opens the breaker.
   */
  abandon(): void {
    if (this.current === 'half-open') this.failure();
  }

  private transition(to: BreakerState): void {
    const from = this.current;
    if (from === to) return;
    this.current = to;
    this.onChange(from, to);
  }
}
