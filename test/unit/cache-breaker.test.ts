import { expect } from 'chai';
import { CircuitBreaker } from '../../cache/index.js';
import type { BreakerState } from '../../cache/index.js';

describe('cache: circuit breaker', () => {
  let clock = 0;
  let transitions: string[] = [];
  const make = () =>
    new CircuitBreaker(
      { failureThreshold: 3, openMs: 1000 },
      (from: BreakerState, to: BreakerState) => transitions.push(`${from}->${to}`),
      () => clock,
    );

  beforeEach(() => {
    clock = 0;
    transitions = [];
  });

  it('opens after N consecutive failures; a success in between resets the count', () => {
    const breaker = make();
    breaker.failure();
    breaker.failure();
    breaker.success();
    breaker.failure();
    breaker.failure();
    expect(breaker.state).to.equal('closed');
    breaker.failure();
    expect(breaker.state).to.equal('open');
    expect(breaker.allow()).to.equal(false);
  });

  it('lets exactly one probe through after the cool-down; success closes it', () => {
    const breaker = make();
    for (let i = 0; i < 3; i++) breaker.failure();
    clock = 999;
    expect(breaker.allow()).to.equal(false);
    expect(breaker.msUntilProbe).to.equal(1);
    clock = 1000;
    expect(breaker.allow()).to.equal(true);
    expect(breaker.state).to.equal('half-open');
    expect(breaker.allow()).to.equal(false);
    breaker.success();
    expect(breaker.state).to.equal('closed');
    expect(breaker.allow()).to.equal(true);
    expect(transitions).to.deep.equal(['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('a failed probe re-opens it for another cool-down', () => {
    const breaker = make();
    for (let i = 0; i < 3; i++) breaker.failure();
    clock = 1000;
    expect(breaker.allow()).to.equal(true);
    breaker.failure();
    expect(breaker.state).to.equal('open');
    clock = 1999;
    expect(breaker.allow()).to.equal(false);
    clock = 2000;
    expect(breaker.allow()).to.equal(true);
  });

  it('abandon() is neutral when closed and a failure when half-open', () => {
    const breaker = make();
    for (let i = 0; i < 10; i++) breaker.abandon();
    expect(breaker.state).to.equal('closed');
    for (let i = 0; i < 3; i++) breaker.failure();
    clock = 1000;
    breaker.allow();
    breaker.abandon();
    expect(breaker.state).to.equal('open');
  });
});
