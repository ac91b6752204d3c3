// Injected failures: FIFO queues of faults, each good for N requests (or 'always').
import type { FaultControl, GraphFault, JwksFault, TokenFault } from './types.js';

interface Entry<T> {
  fault: T;
  remaining: number;
}

class FaultQueue<T extends { times?: number | 'always' }> {
  private entries: Entry<T>[] = [];

  push(fault: T): void {
    const times = fault.times === undefined ? 1 : fault.times === 'always' ? Number.POSITIVE_INFINITY : fault.times;
    if (!(times >= 1)) throw new Error(`emulator: fault 'times' must be >= 1 or 'always', got ${String(fault.times)}`);
    this.entries.push({ fault, remaining: times });
  }

  /** Consumes one use of the first fault that `matches`. */
  take(matches: (fault: T) => boolean = () => true): T | undefined {
    const index = this.entries.findIndex((entry) => matches(entry.fault));
    const entry = this.entries[index];
    if (!entry) return undefined;
    entry.remaining -= 1;
    if (entry.remaining <= 0) this.entries.splice(index, 1);
    return entry.fault;
  }

  get size(): number {
    return this.entries.length;
  }

  clear(): void {
    this.entries = [];
  }
}

export class Faults {
  readonly token = new FaultQueue<TokenFault>();
  readonly jwks = new FaultQueue<JwksFault>();
  readonly openidConfiguration = new FaultQueue<JwksFault>();
  readonly graph = new FaultQueue<GraphFault>();
  jwksDown: false | 'status' | 'close' = false;

  clear(): void {
    this.token.clear();
    this.jwks.clear();
    this.openidConfiguration.clear();
    this.graph.clear();
    this.jwksDown = false;
  }

  control(): FaultControl {
    return {
      injectToken: (fault) => this.token.push(checkStatus(fault)),
      injectJwks: (fault) => this.jwks.push(checkStatus(fault)),
      injectOpenidConfiguration: (fault) => this.openidConfiguration.push(checkStatus(fault)),
      jwksDown: (down, mode = 'status') => {
        this.jwksDown = down ? mode : false;
      },
      injectGraph: (fault) => {
        if (fault.caeClaims !== undefined && fault.status !== undefined && fault.status !== 401) {
          throw new Error('emulator: a CAE fault is always a 401');
        }
        this.graph.push(checkStatus(fault));
      },
      pending: () => ({
        token: this.token.size,
        jwks: this.jwks.size,
        openidConfiguration: this.openidConfiguration.size,
        graph: this.graph.size,
      }),
      clear: () => this.clear(),
    };
  }
}

function checkStatus<T extends { status?: number; delayMs?: number }>(fault: T): T {
  if (fault.status !== undefined && !(Number.isInteger(fault.status) && fault.status >= 200 && fault.status <= 599)) {
    throw new Error(`emulator: fault status must be an HTTP status, got ${String(fault.status)}`);
  }
  if (fault.delayMs !== undefined && !(fault.delayMs >= 0)) throw new Error('emulator: delayMs must be >= 0');
  return fault;
}
