import type { Context } from 'koa';
import type { AuthState } from '../../middleware/authenticate.js';
import type { RequestState } from '../../middleware/request-context.js';
import type { DownstreamClient } from '../downstream-client.js';

/** GET /api/me: Graph `/v1.0/me` as the caller; status, body and content type as Graph sent them. */
export function meRoute(graph: DownstreamClient) {
  return async function me(ctx: Context): Promise<void> {
    const state = ctx.state as AuthState & RequestState;
    const abort = new AbortController();
    ctx.req.once('close', () => {
      if (!ctx.res.writableFinished) abort.abort();
    });
    const response = await graph.send(state.auth, {
      method: 'GET',
      pathAndQuery: `/v1.0/me${ctx.search}`,
      headers: { accept: 'application/json' },
      requestId: state.requestId,
      signal: abort.signal,
    });
    state.logFields['tokenSource'] = response.tokenSource;
    ctx.status = response.status;
    ctx.set(response.headers);
    ctx.body = response.body;
  };
}
