/**
 * Typed errors of the cache layer. Every error has a stable `code`; callers branch on the
 * code, never on the message. None of these messages ever contains a cached value, a full
 * cache key or key material.
 */
type CacheErrorCode =
  | 'CACHE_CONFIG_INVALID'
  | 'CACHE_ENCRYPTION_KEY_INVALID'
  | 'CACHE_KEY_INVALID'
  | 'CACHE_CLOSED'
  | 'CACHE_ENTRY_INVALID'
  | 'L2_TIMEOUT'
  | 'L2_UNAVAILABLE'
  | 'L2_COMMAND_FAILED'
  | 'ENVELOPE_INVALID';

class CacheError extends Error {
  readonly code: CacheErrorCode;

  constructor(code: CacheErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad cache options (missing encryption keys with an L2, both url and cluster nodes, ...). */
export class CacheConfigError extends CacheError {
  constructor(message: string) {
    super('CACHE_CONFIG_INVALID', message);
  }
}

/** A malformed CACHE_ENCRYPTION_KEYS element. Names the element, never echoes the key. */
export class EncryptionKeyError extends CacheError {
  /** 1-based position of the bad element in the list. */
  readonly element: number;

  constructor(element: number, message: string) {
    super('CACHE_ENCRYPTION_KEY_INVALID', message);
    this.element = element;
  }
}

/** A cache key the cache refuses (empty, or in the namespace reserved for locks). */
export class CacheKeyError extends CacheError {
  constructor(message: string) {
    super('CACHE_KEY_INVALID', message);
  }
}

/** getOrCreate after close(). */
export class CacheClosedError extends CacheError {
  constructor() {
    super('CACHE_CLOSED', 'the cache is closed');
  }
}

/** create() resolved to something that is not a CacheEntry. */
export class CacheEntryError extends CacheError {
  constructor(message: string) {
    super('CACHE_ENTRY_INVALID', message);
  }
}

/** The store operation names, used in errors, logs and metric labels. */
export type L2Op = 'get' | 'set' | 'del' | 'lock' | 'unlock' | 'publish' | 'subscribe';

/** Base of the errors an L2 store operation rejects with. The cache never lets one escape. */
export class L2Error extends CacheError {
  readonly op: L2Op;

  constructor(code: 'L2_TIMEOUT' | 'L2_UNAVAILABLE' | 'L2_COMMAND_FAILED', op: L2Op, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.op = op;
  }
}

/** The operation did not complete within the command timeout. */
export class L2TimeoutError extends L2Error {
  constructor(op: L2Op, timeoutMs: number, options?: { cause?: unknown }) {
    super('L2_TIMEOUT', op, `L2 ${op} timed out after ${timeoutMs} ms`, options);
  }
}

/** Not attempted: the store is disconnected or its circuit breaker is open. Costs nothing. */
export class L2UnavailableError extends L2Error {
  readonly reason: 'disconnected' | 'breaker_open' | 'closed';

  constructor(op: L2Op, reason: 'disconnected' | 'breaker_open' | 'closed', detail?: string) {
    super('L2_UNAVAILABLE', op, `L2 ${op} skipped: ${detail ?? reason}`);
    this.reason = reason;
  }
}

/** The store answered with an error, or the connection failed mid-command. */
export class L2CommandError extends L2Error {
  constructor(op: L2Op, cause: unknown) {
    super('L2_COMMAND_FAILED', op, `L2 ${op} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** A stored value that does not open: tampered, unknown key id, wrong key (AAD), garbage. */
export class EnvelopeError extends CacheError {
  readonly reason: 'malformed' | 'unknown_kid' | 'auth_failed' | 'plaintext_refused' | 'encrypted_refused';

  constructor(reason: EnvelopeError['reason'], message: string) {
    super('ENVELOPE_INVALID', message);
    this.reason = reason;
  }
}
