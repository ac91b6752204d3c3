import { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';
import { ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS } from '@opentelemetry/semantic-conventions';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import { errorCode } from '../error-code.js';
import type { Tracing } from '../observability/tracing.js';

type Labels = 'downstream' | 'method' | 'status';

export interface DownstreamMetrics {
  requests: Counter<Labels>;
  latency: Histogram<Labels>;
}

/** `obo_downstream_requests_total` and `obo_downstream_latency_seconds`, once per app. */
export function createDownstreamMetrics(registry: Registry): DownstreamMetrics {
  const labelNames = ['downstream', 'method', 'status'] as const;
  const name = 'obo_downstream_requests_total';
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  return {
    requests: new Counter({
      name,
      help: 'Calls to downstream APIs (Graph) by downstream, method and status (error = no response)',
      labelNames,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'obo_downstream_latency_seconds',
      help: 'Time from sending a downstream call to its response headers, by downstream, method and status',
      labelNames,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}

/**
 * An undici interceptor for the shared pool: each call to a downstream gets a client span (a
 * child of whatever span is current when it is sent), carries that span in `traceparent`, and
 * is counted and timed by status. `downstreams` names the downstream origins
 * (`https://graph.microsoft.com` → `graph`); calls to other origins (the token endpoint) pass
 * through untouched.
 */
export function observeDownstreams(
  downstreams: ReadonlyMap<string, string>,
  tracing: Tracing,
  metrics: DownstreamMetrics,
): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (options, handler) => {
    const origin = originOf(options.origin);
    const downstream = downstreams.get(origin);
    if (downstream === undefined) return dispatch(options, handler);
    const method = options.method;
    const span = tracing.startSpan(`${method} ${downstream}`, {
      kind: SpanKind.CLIENT,
      attributes: { [ATTR_HTTP_REQUEST_METHOD]: method, [ATTR_SERVER_ADDRESS]: hostOf(origin) },
    });
    const started = performance.now();
    let answered = false;
    const record = (status: string) => {
      const labels = { downstream, method, status };
      metrics.requests.inc(labels);
      metrics.latency.observe(labels, (performance.now() - started) / 1000);
    };
    // Tracing off: the caller's own trace context, if any, is already in the headers (the client's `traceHeaders`).
    return dispatch(tracing.enabled ? { ...options, headers: withTraceContext(options.headers, tracing.propagationHeaders(span)) } : options, {
      onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
      onRequestUpgrade: (controller, statusCode, responseHeaders, socket) =>
        handler.onRequestUpgrade?.(controller, statusCode, responseHeaders, socket),
      onResponseStart(controller, statusCode, responseHeaders, statusMessage) {
        if (!answered) {
          answered = true;
          record(String(statusCode));
          span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode);
          if (statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        }
        return handler.onResponseStart?.(controller, statusCode, responseHeaders, statusMessage);
      },
      onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
      onResponseEnd(controller, trailers) {
        span.end();
        return handler.onResponseEnd?.(controller, trailers);
      },
      onResponseError(controller, error) {
        if (!answered) record('error');
        failed(span, error);
        return handler.onResponseError?.(controller, error);
      },
    });
  };
}

function failed(span: Span, error: Error): void {
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.setAttribute(ATTR_ERROR_TYPE, errorCode(error) ?? error.name);
  span.end();
}

function originOf(value: string | URL | undefined): string {
  if (value instanceof URL) return value.origin;
  return value !== undefined && URL.canParse(value) ? new URL(value).origin : '';
}

function hostOf(origin: string): string {
  return URL.canParse(origin) ? new URL(origin).hostname : origin;
}

/**
 * The request's headers with our trace context in place of any the caller's headers brought
 * (with none to send, theirs are dropped too: only a context we vouch for goes out).
 */
function withTraceContext(headers: Dispatcher.DispatchOptions['headers'], trace: Record<string, string>): Record<string, string | string[]> {
  const merged: Record<string, string | string[]> = {};
  const add = (name: string, value: string | string[] | undefined) => {
    const key = name.toLowerCase();
    if (value !== undefined && key !== 'traceparent' && key !== 'tracestate') merged[key] = value;
  };
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) add(String(headers[i]), String(headers[i + 1]));
  } else if (headers && isHeaderIterable(headers)) {
    for (const [name, value] of headers) add(name, value);
  } else if (headers) {
    for (const [name, value] of Object.entries(headers)) add(name, value);
  }
  return { ...merged, ...trace };
}

function isHeaderIterable(headers: object): headers is Iterable<[string, string | string[] | undefined]> {
  return Symbol.iterator in headers;
}
