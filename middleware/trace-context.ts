import type { IncomingHttpHeaders } from 'node:http';
import { ROOT_CONTEXT, TraceFlags, defaultTextMapGetter, defaultTextMapSetter, trace, type SpanContext } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

/** W3C Trace Context (`traceparent` + `tracestate`), read and written by OpenTelemetry's propagator. */
const propagator = new W3CTraceContextPropagator();

/**
 * The flags Trace Context defines: sampled, and level 2's random. Others are zeroed before they
 * are passed on, as the spec asks (and the propagator writes only flags below 0x10 correctly).
 */
const DEFINED_FLAGS = TraceFlags.SAMPLED | 0x02;

/**
 * The caller's trace context, when its `traceparent` is valid (version `ff`, all-zero ids and
 * extra fields on version 00 are not: a new trace starts). `tracestate` counts only with a valid
 * `traceparent`; its invalid members are dropped.
 */
export function incomingTraceContext(headers: IncomingHttpHeaders): SpanContext | undefined {
  const incoming = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter));
  return incoming && { ...incoming, traceFlags: incoming.traceFlags & DEFINED_FLAGS };
}

/** `traceparent` (and `tracestate`, unless empty) naming `spanContext` as the parent; none for an invalid one. */
export function traceHeaders(spanContext: SpanContext): Record<string, string> {
  const headers: Record<string, string> = {};
  propagator.inject(trace.setSpanContext(ROOT_CONTEXT, spanContext), headers, defaultTextMapSetter);
  if (headers['tracestate'] === '') delete headers['tracestate'];
  return headers;
}
