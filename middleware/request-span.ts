import { SpanStatusCode, type Span, type SpanContext } from '@opentelemetry/api';
import { ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_URL_PATH } from '@opentelemetry/semantic-conventions';
import type { Next } from 'koa';
import type { AppContext } from './app-state.js';
import { matchedRoute } from './matched-route.js';

export interface RequestTracer {
  /**
   * Runs `handle` inside a server span whose parent is the caller's trace context (a new trace
   * without one), and ends the span after it. With tracing off the span is a no-op, but the
   * caller's context still reaches outgoing calls.
   */
  traceRequest(incoming: SpanContext | undefined, handle: (span: Span) => Promise<void>): Promise<void>;
}

/** The server span of each request, named and labelled by the matched route once it is known. */
export function requestSpan(tracer: RequestTracer) {
  return async function requestSpanMiddleware(ctx: AppContext, next: Next): Promise<void> {
    const { state } = ctx;
    await tracer.traceRequest(state.traceContext, async (span) => {
      try {
        await next();
      } finally {
        if (span.isRecording()) {
          const route = matchedRoute(ctx);
          span.updateName(route ? `${ctx.method} ${route}` : ctx.method);
          span.setAttributes({
            [ATTR_HTTP_REQUEST_METHOD]: ctx.method,
            [ATTR_URL_PATH]: ctx.path,
            [ATTR_HTTP_RESPONSE_STATUS_CODE]: ctx.status,
            ...(route ? { [ATTR_HTTP_ROUTE]: route } : {}),
          });
          if (ctx.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
          state.logFields.traceId = span.spanContext().traceId;
        }
      }
    });
  };
}
