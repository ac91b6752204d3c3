import { SpanStatusCode, type Span } from '@opentelemetry/api';
import { ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_URL_PATH } from '@opentelemetry/semantic-conventions';
import type { Context, Next } from 'koa';
import { matchedRoute } from './matched-route.js';
import type { RequestState } from './request-context.js';
import type { TraceContext } from '../api/observability/trace-context.js';

export interface RequestTracer {
  /**
   * Runs `handle` inside a server span whose parent is the caller's trace context (a new trace
   * without one), and ends the span after it. With tracing off the span is a no-op, but the
   * caller's context still reaches outgoing calls.
   */
  traceRequest(incoming: TraceContext | undefined, handle: (span: Span) => Promise<void>): Promise<void>;
}

/** The server span of each request, named and labelled by the matched route once it is known. */
export function requestSpan(tracer: RequestTracer) {
  return async function requestSpanMiddleware(ctx: Context, next: Next): Promise<void> {
    const state = ctx.state as RequestState;
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
          state.logFields['traceId'] = span.spanContext().traceId;
        }
      }
    });
  };
}
