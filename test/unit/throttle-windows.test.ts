/**
 * The shared throttling windows (api/token/throttle-windows.ts) over an in-memory L2Store: what
 * is written, what is trusted when read back, and that a failing store leaves the local windows
 * working. The real Redis and two real instances are in test/integration/fleet-throttle.test.ts.
 */
import { expect } from 'chai';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { L2Store } from '../../cache/index.js';
import { createLocalThrottleWindows, createSharedThrottleWindows, registerThrottleGauge, throttleKey } from '../../api/token/throttle-windows.js';
import { registryMetric } from '../support/metrics.js';

/** A Map with TTLs on the test's clock; `down` makes every call reject as a disconnected store would. */
function memoryStore(now: () => number): L2Store & { values: Map<string, { value: Buffer; until: number }>; gets: number; down: boolean } {
  const values = new Map<string, { value: Buffer; until: number }>();
  const unavailable = () => Promise.reject(new Error('disconnected'));
  const store = {
    values,
    gets: 0,
    down: false,
    get(key: string) {
      store.gets++;
      if (store.down) return unavailable();
      const found = values.get(key);
      return Promise.resolve(found && found.until > now() ? found.value : null);
    },
    set(key: string, value: Buffer, ttlMs: number) {
      if (store.down) return unavailable();
      values.set(key, { value, until: now() + ttlMs });
      return Promise.resolve();
    },
    del: () => Promise.resolve(),
    tryLock: () => Promise.resolve(true),
    unlock: () => Promise.resolve(),
    publish: () => Promise.resolve(),
    subscribe: () => Promise.resolve(() => Promise.resolve()),
    ready: () => Promise.resolve(),
    health: () => ({ status: 'up' as const }),
    close: () => Promise.resolve(),
  };
  return store;
}

describe('throttle windows', () => {
  const logger = pino({ level: 'silent' });
  // A clock that moves only when the test says so (real time would shift the numbers by a few ms).
  let time = 1_800_000_000_000;
  const clock = {
    now: (): number => time,
    advance: (ms: number): void => void (time += ms),
  };
  const key = throttleKey('tenant-1', ['https://graph.microsoft.com/.default']);

  it('throttleKey: the same scope set in any order is the same window', () => {
    expect(throttleKey('t', ['b', 'a', 'b'])).to.equal(throttleKey('t', ['a', 'b']));
    expect(throttleKey('t', ['a'])).not.to.equal(throttleKey('u', ['a']));
  });

  it('one instance opens a window; another sees it (one Redis read), keyed by a hash, and it ends on time', async () => {
    const store = memoryStore(clock.now);
    const a = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    const b = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    expect(await b.remainingMs(key)).to.equal(0);
    await a.open(key, 20_000);
    const keys = [...store.values.keys()];
    expect(keys).to.have.length(2).and.include('obo:throttle:fleet');
    expect(keys.find((k) => k !== 'obo:throttle:fleet')).to.match(/^obo:throttle:[A-Za-z0-9_-]{43}$/);
    expect(keys.join()).not.to.include('tenant-1');

    clock.advance(5_000);
    expect(await b.remainingMs(key)).to.equal(15_000);
    const gets = store.gets;
    clock.advance(1_000);
    expect(await b.remainingMs(key), 'from its own copy').to.equal(14_000);
    expect(store.gets, 'no Redis read while a window is known locally').to.equal(gets);
    expect(await b.status()).to.deep.equal({ remainingMs: 14_000, scope: 'fleet' });
    clock.advance(14_001);
    expect(await b.remainingMs(key)).to.equal(0);
    expect(await b.status()).to.deep.equal({ remainingMs: 0, scope: 'fleet' });
  });

  it('a window read back is never longer than its own length, nor than 300 s (a clock behind, a bad value)', async () => {
    const store = memoryStore(clock.now);
    const b = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    const redisKey = (): string => [...store.values.keys()].find((k) => k !== 'obo:throttle:fleet') ?? '';
    const ahead = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: () => clock.now() + 60_000 });
    await ahead.open(key, 20_000); // written by an instance whose clock runs a minute ahead
    expect(await b.remainingMs(key)).to.equal(20_000);

    store.values.set(redisKey(), { value: Buffer.from(`${clock.now() + 86_400_000} 86400000`), until: clock.now() + 86_400_000 });
    const fresh = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    expect(await fresh.remainingMs(key)).to.equal(300_000);
    for (const junk of ['', 'x y', '1e400 5', `${clock.now() + 5_000}`]) {
      store.values.set(redisKey(), { value: Buffer.from(junk), until: clock.now() + 10_000 });
      const reader = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
      expect(await reader.remainingMs(key), JSON.stringify(junk)).to.equal(0);
    }
  });

  it('the fleet marker is only lengthened: a shorter window elsewhere does not hide a longer one', async () => {
    const store = memoryStore(clock.now);
    const a = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    await a.open(key, 30_000);
    await a.open(throttleKey('tenant-2', ['x']), 5_000);
    const other = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    expect(await other.status()).to.deep.equal({ remainingMs: 30_000, scope: 'fleet' });
  });

  it('Redis down: the local windows only, nothing rejects, status says instance', async () => {
    const store = memoryStore(clock.now);
    store.down = true;
    const a = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    const b = createSharedThrottleWindows({ store, keyPrefix: 'obo:', logger, now: clock.now });
    await a.open(key, 20_000);
    expect(await a.remainingMs(key)).to.equal(20_000);
    expect(await b.remainingMs(key)).to.equal(0);
    expect(await a.status()).to.deep.equal({ remainingMs: 20_000, scope: 'instance' });
  });

  it('obo_token_throttle_remaining_seconds: the longest window, in whole seconds; 0 when none', async () => {
    const registry = new Registry();
    const windows = createLocalThrottleWindows(clock.now);
    registerThrottleGauge(registry, windows);
    expect(await registryMetric(registry, 'obo_token_throttle_remaining_seconds')).to.equal(0);
    await windows.open(key, 19_500);
    expect(await registryMetric(registry, 'obo_token_throttle_remaining_seconds')).to.equal(20);
    expect(() => registerThrottleGauge(registry, windows)).to.throw(/already holds/);
  });
});
