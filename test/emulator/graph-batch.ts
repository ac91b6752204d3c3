// POST /{version}/$batch: at most 20 requests with unique ids, dependsOn (failed dependency
// → 424), per-item status/headers/body, responses in a different order than requested.
import { ODATA_JSON, graphError, type GraphIds, type GraphRequest, type GraphResponse } from './graph-resources.js';

const MAX_REQUESTS = 20;

interface BatchItem {
  id: string;
  method: string;
  url: string;
  dependsOn: string[];
  headers: Record<string, string>;
  body: unknown;
}

/** Runs one request the way Graph would outside a batch (GraphService.handle); passed in, so this file needs nothing of graph.ts. */
type HandleRequest = (req: GraphRequest, ids: GraphIds) => Promise<GraphResponse>;

export async function runBatch(handle: HandleRequest, req: GraphRequest, version: string, ids: GraphIds): Promise<GraphResponse> {
  const parsed = parseBatch(req.body);
  if (typeof parsed === 'string') return graphError(400, 'BadRequest', parsed, ids);
  const byId = new Map(parsed.map((item) => [item.id, item]));
  const results = new Map<string, { id: string; status: number; headers: Record<string, string>; body?: unknown }>();
  const running = new Set<string>();

  const run = async (item: BatchItem): Promise<number> => {
    const done = results.get(item.id);
    if (done) return done.status;
    if (running.has(item.id)) return 424; // a dependency cycle cannot succeed
    running.add(item.id);
    const depStatuses: number[] = [];
    for (const dep of item.dependsOn) {
      const target = byId.get(dep);
      depStatuses.push(target ? await run(target) : 424);
    }
    if (depStatuses.some((s) => s >= 400)) {
      results.set(item.id, {
        id: item.id,
        status: 424,
        headers: { 'Content-Type': 'application/json' },
        body: { error: { code: 'FailedDependency', message: 'The request could not be executed because a request it depends on failed.' } },
      });
      return 424;
    }
    const response = await handle(itemRequest(item, version, req), ids);
    const headers = Object.fromEntries(
      Object.entries(response.headers).filter(([k]) => ['content-type', 'retry-after', 'www-authenticate', 'etag'].includes(k.toLowerCase())),
    );
    const body = response.binary ? response.binary.toString('base64') : (response.text ?? response.json);
    results.set(item.id, { id: item.id, status: response.status, headers, ...(body === undefined ? {} : { body }) });
    return response.status;
  };

  for (const item of parsed) await run(item);
  return { status: 200, headers: { 'Content-Type': ODATA_JSON }, json: { responses: shuffle([...results.values()]) } };
}

function itemRequest(item: BatchItem, version: string, outer: GraphRequest): GraphRequest {
  // Graph also takes the url with the batch's own version in front (`/v1.0/me`, as the Graph SDK writes it).
  const relative = item.url.startsWith('/') ? item.url : `/${item.url}`;
  const unversioned =
    relative === `/${version}` || relative.startsWith(`/${version}/`) || relative.startsWith(`/${version}?`)
      ? relative.slice(version.length + 1) || '/'
      : relative;
  const url = new URL(unversioned, 'https://graph.invalid');
  const consistencylevel = Object.entries(item.headers).find(([k]) => k.toLowerCase() === 'consistencylevel')?.[1];
  return {
    method: item.method.toUpperCase(),
    path: `/${version}${url.pathname}`,
    query: url.searchParams,
    // Items run with the batch's own token.
    headers: {
      ...(outer.headers.authorization ? { authorization: outer.headers.authorization } : {}),
      ...(consistencylevel ? { consistencylevel } : {}),
    },
    body: item.body,
    inBatch: true,
  };
}

function parseBatch(body: unknown): BatchItem[] | string {
  if (typeof body !== 'object' || body === null || !('requests' in body) || !Array.isArray(body.requests)) {
    return 'Invalid batch payload format.';
  }
  const requests: unknown[] = body.requests;
  if (requests.length > MAX_REQUESTS) return `The number of requests in the batch exceeds the maximum of ${MAX_REQUESTS}.`;
  const items: BatchItem[] = [];
  for (const raw of requests) {
    if (typeof raw !== 'object' || raw === null) return 'Invalid batch payload format.';
    const r = raw as Record<string, unknown>;
    if (typeof r.id !== 'string' || r.id === '' || typeof r.method !== 'string' || typeof r.url !== 'string') {
      return 'Invalid batch payload format. Each request needs a string id, method and url.';
    }
    if (/^[a-z]+:\/\//i.test(r.url)) return `Request '${r.id}': the url must be relative to the service root.`;
    if (items.some((i) => i.id === r.id)) return `Request Id '${r.id}' is not unique.`;
    const dependsOn = r.dependsOn === undefined ? [] : r.dependsOn;
    if (!Array.isArray(dependsOn) || !dependsOn.every((d): d is string => typeof d === 'string'))
      return 'Invalid batch payload format: dependsOn must be an array of request ids.';
    const headers =
      typeof r.headers === 'object' && r.headers !== null ? Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)])) : {};
    items.push({ id: r.id, method: r.method, url: r.url, dependsOn, headers, body: r.body });
  }
  const ids = new Set(items.map((i) => i.id));
  const unknown = items.flatMap((i) => i.dependsOn).find((d) => !ids.has(d));
  if (unknown !== undefined) return `The dependsOn value '${unknown}' does not reference a request in this batch.`;
  return items;
}

/** Graph returns batch responses in any order; make sure a multi-item batch is never in request order. */
function shuffle<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  if (out.length > 1 && out.every((v, i) => v === items[i])) out.push(out.shift() as T);
  return out;
}
