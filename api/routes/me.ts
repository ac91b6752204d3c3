import { authenticatedCaller, type AppContext } from '../../middleware/app-state.js';
import type { DownstreamClient } from '../downstream/client.js';
import { callerTraceHeaders, clientRequestId, disconnectSignal, relayDownstreamResponse } from './relay.js';

/** GET /api/me: Graph `/v1.0/me` as the caller; status, body and content type as Graph sent them. */
export function meRoute(graph: DownstreamClient) {
  return async function me(ctx: AppContext): Promise<void> {
    const response = await graph.send(authenticatedCaller(ctx), {
      method: 'GET',
      pathAndQuery: `/v1.0/me${ctx.search}`,
      headers: { accept: 'application/json' },
      requestId: clientRequestId(ctx),
      signal: disconnectSignal(ctx),
      record: ctx.state.logFields,
      ...callerTraceHeaders(ctx),
    });
    await relayDownstreamResponse(ctx, response);
  };
}
