/**
 * Mocha fixtures: each `use…()` call, made inside a `describe` block, registers the hooks that
 * start a thing before the block's tests and stop it after them, and returns a lazy handle to it.
 *
 *   describe('…', () => {
 *     const emulator = useEmulator();                       // before: start, after: close
 *     const api = useService(emulator, { LOG_LEVEL: 'info' });
 *     it('…', async () => { await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200); });
 *   });
 *
 * - A handle is a stand-in: property reads go to the running thing, and a read outside the
 *   block's tests (before its `before` hook ran, or after its `after` hook) throws.
 * - `{ each: true }` starts a fresh one for every test (beforeEach/afterEach) instead.
 * - Stopping happens in reverse order of starting: a service closes before the emulator it
 *   talks to, whichever `after` hook mocha runs first.
 * - Hooks only start and stop things. Assertions belong in tests (a failing hook skips the rest
 *   of its block); see `itChecking` in ./checked-it.ts for a check every test of a block ends with.
 */
import type { AppDependencies } from '../../api/app.js';
import type { Environment } from '../../api/config/load-config.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../emulator/index.js';
import { startRecordingProxy, type RecordingProxy } from './recording-proxy.js';
import { startRedis, type RedisServer, type StartRedisOptions } from './redis.js';
import { startService, type TestService } from './service.js';

export interface FixtureOptions {
  /** A fresh instance for every test (beforeEach/afterEach) instead of one for the block. */
  each?: boolean;
}

type Deps = Omit<AppDependencies, 'logDestination'>;
/** A value, or a function computing it once the fixtures it reads from are running. */
type Later<T> = T | (() => T);

const later = <T>(value: Later<T>): T => (typeof value === 'function' ? (value as () => T)() : value);

/** For each handle, how to stop what was started on top of it (newest last). */
const dependents = new WeakMap<object, Set<() => Promise<void>>>();

interface FixtureSpec<T> extends FixtureOptions {
  what: string;
  start(): Promise<T>;
  stop(value: T): Promise<void>;
  /** A handle this one talks to: this one stops before it. */
  on?: object;
}

function fixture<T extends object>(spec: FixtureSpec<T>): T {
  let current: T | undefined;
  const own = new Set<() => Promise<void>>();
  const handle = new Proxy({} as T, {
    get(_target, property) {
      // Never a thenable: `await handle` must not call into a missing target.
      if (property === 'then') return undefined;
      if (!current) throw new Error(`${spec.what} is not running here: use it inside a test of the describe block that called use…()`);
      const value: unknown = Reflect.get(current, property, current);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(current) : value;
    },
    has: (_target, property) => current !== undefined && property in current,
  });
  dependents.set(handle, own);
  const up = async (): Promise<void> => {
    current = await spec.start();
    if (spec.on) dependents.get(spec.on)?.add(down);
  };
  async function down(): Promise<void> {
    if (spec.on) dependents.get(spec.on)?.delete(down);
    // Whatever was started on top of this one stops first, newest first.
    for (const close of [...own].reverse()) await close();
    const value = current;
    current = undefined;
    if (value) await spec.stop(value);
  }
  if (spec.each) {
    beforeEach(up);
    afterEach(down);
  } else {
    before(up);
    after(down);
  }
  return handle;
}

/** The Entra ID + Graph emulator (test/emulator/), one per block (or per test with `each`). */
export function useEmulator(emulatorOptions: EmulatorOptions = {}, options: FixtureOptions = {}): Emulator {
  return fixture({ what: 'the emulator', start: () => startEmulator(emulatorOptions), stop: (emulator) => emulator.close(), ...options });
}

/** A throw-away redis-server (test/support/redis.ts). */
export function useRedis(redisOptions: StartRedisOptions = {}, options: FixtureOptions = {}): RedisServer {
  return fixture({ what: 'redis-server', start: () => startRedis(redisOptions), stop: (redis) => redis.stop(), ...options });
}

/** A recording reverse proxy (test/support/recording-proxy.ts) in front of `target`, e.g. `() => emulator.graphBaseUrl`. */
export function useRecordingProxy(target: Later<string>, options: FixtureOptions = {}): RecordingProxy {
  return fixture({ what: 'the recording proxy', start: () => startRecordingProxy(later(target)), stop: (proxy) => proxy.close(), ...options });
}

/**
 * The real service (test/support/service.ts) pointed at `emulator`. `env` and `deps` may be
 * functions, called when the service starts (so they can read the emulator's URLs).
 */
export function useService(emulator: Emulator, env: Later<Environment> = {}, deps: Later<Deps> = {}, options: FixtureOptions = {}): TestService {
  return fixture({
    what: 'the service',
    start: () => startService(emulator, later(env), later(deps)),
    stop: (api) => api.close(),
    on: emulator,
    ...options,
  });
}

export interface ServicePool {
  /** Starts a service that is closed after the current test (or before, with `close`). */
  start(env?: Environment, deps?: Deps, on?: Emulator): Promise<TestService>;
  /** Closes one of them now (an instance going away mid-test); it is not closed again. */
  close(api: TestService): Promise<void>;
  /** The services of the current test, oldest first. */
  readonly running: readonly TestService[];
}

/** Services a test starts itself (different settings per test): all closed after each test. */
export function useServices(emulator: Emulator): ServicePool {
  const running = new Map<TestService, () => Promise<void>>();
  const close = async (api: TestService): Promise<void> => {
    const stop = running.get(api);
    running.delete(api);
    await stop?.();
  };
  const closeAll = async (): Promise<void> => {
    for (const api of [...running.keys()].reverse()) await close(api);
  };
  afterEach(closeAll);
  after(closeAll);
  return {
    async start(env = {}, deps = {}, on = emulator) {
      const api = await startService(on, env, deps);
      const stop = async (): Promise<void> => {
        dependents.get(on)?.delete(stop);
        running.delete(api);
        await api.close();
      };
      dependents.get(on)?.add(stop);
      running.set(api, stop);
      return api;
    },
    close,
    get running() {
      return [...running.keys()];
    },
  };
}
