/** A caller's W3C Trace Context (`traceparent` + `tracestate`), parsed and checked. */
export interface TraceContext {
  traceId: string;
  /** The caller's span: the parent of ours. */
  spanId: string;
  /** Trace flags; bit 0 = sampled. */
  flags: number;
  /** Opaque vendor data, passed on unchanged. */
  tracestate?: string;
}

// version-traceid-parentid-flags; a later version may append fields after a dash.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const TRACESTATE = /^[\x20-\x7e]{1,512}$/;

/**
 * Parses `traceparent` as W3C Trace Context level 1 says a receiver must: version `ff`, all-zero
 * ids and extra fields on version 00 are invalid, and an invalid header is ignored (a new trace
 * starts). `tracestate` counts only with a valid `traceparent`.
 */
export function parseTraceContext(traceparent: string, tracestate: string): TraceContext | undefined {
  const match = TRACEPARENT.exec(traceparent.trim());
  if (!match) return undefined;
  const [, version, traceId = '', spanId = '', flags = '', rest] = match;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  const state = tracestate.trim();
  return { traceId, spanId, flags: parseInt(flags, 16), ...(TRACESTATE.test(state) ? { tracestate: state } : {}) };
}

/** The `traceparent` value for a span context (always version 00). */
export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}
