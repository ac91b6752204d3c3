import type { SpanContext } from '@opentelemetry/api';
import type { DefaultContext, Middleware, ParameterizedContext } from 'koa';
import type { AuthenticatedCaller } from './bearer/validator.js';
import type { RequestBodyState } from './request-body.js';

/**
 * What the layers add to the request's one log line (requestContext writes it when the request
 * ends). Only these fields, so a typo or a secret cannot slip in under a new name.
 */
interface RequestLogFields {
  /** The trace this request belongs to: the caller's, or the one our server span started. */
  traceId?: string;
  /** How the downstream token was served: l1 / l2 (cache), exchange (this request), joined (another's). */
  cache?: 'l1' | 'l2' | 'exchange' | 'joined';
  /** Time this request spent in its own OBO exchange, ms. */
  exchangeMs?: number;
  /** Which token the downstream got: user (OBO, on behalf of the caller) or app (the API's own). */
  token?: 'user' | 'app';
  /** The configured downstream a proxied request went to. */
  downstream?: string;
  downstreamStatus?: number;
  /** The downstream's own `request-id`, to find the call in its logs. */
  downstreamRequestId?: string;
  downstreamRetries?: number;
}

/** `ctx.state` of every request of the service (koa's state, typed). */
export interface AppState extends RequestBodyState {
  /** The caller's id when it sent a sane one, else a new UUID; returned in `x-request-id`. */
  requestId: string;
  /** The caller's W3C trace context, when it sent a valid `traceparent`. */
  traceContext?: SpanContext;
  logFields: RequestLogFields;
  /** The validated caller, once `authenticate` has run (every route under /api). */
  auth?: AuthenticatedCaller;
}

/** The koa context of the service: every middleware and route gets this one. */
export type AppContext = ParameterizedContext<AppState, AppContextExtension>;

/** For `Koa<AppState, AppContextExtension>`: makes `app.currentContext.state` an AppState too. */
export type AppContextExtension = DefaultContext & { state: AppState };

export type AppMiddleware = Middleware<AppState, AppContextExtension>;

/**
 * The validated caller of a route that needs one. `authenticate` guards every route under /api,
 * so its absence is a wiring bug: the request fails (500) rather than run without a caller.
 */
export function authenticatedCaller(ctx: AppContext): AuthenticatedCaller {
  const { auth } = ctx.state;
  if (!auth) throw new Error(`no authenticated caller for ${ctx.method} ${ctx.path}: authenticate did not run`);
  return auth;
}
