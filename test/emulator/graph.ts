// The Microsoft Graph side: bearer-token check against the tokens this emulator issued,
// injected faults (incl. CAE challenges), and the /v1.0 + /beta resources.
import { createHash } from 'node:crypto';
import { runBatch } from './graph-batch.js';
import {
  GraphQueryError,
  ODATA_JSON,
  directoryObjectEntity,
  graphError,
  makePhoto,
  messageEntity,
  page,
  parseSelect,
  project,
  projectUser,
  type GraphIds,
  type GraphRequest,
  type GraphResponse,
  type Json,
} from './graph-resources.js';
import { header, readBody, sendJson, sendStream, sendText, sleep, type HttpContext } from './http.js';
import { decodeJwt, verifyRsa } from './jwt.js';
import { GRAPH_APP_ID, GRAPH_RESOURCE, type DirectoryUser } from './seed.js';
import type { EmulatorState, GraphTokenRecord } from './state.js';
import { nowSeconds } from './tokens.js';
import type { GraphFault } from './types.js';

const UNAUTHORIZED_CHALLENGE = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="${GRAPH_APP_ID}"`;
const READ_SELF = ['User.Read', 'User.ReadWrite', 'User.ReadBasic.All', 'User.Read.All', 'Directory.Read.All'];
const READ_USERS = ['User.ReadBasic.All', 'User.Read.All', 'Directory.Read.All'];

type Auth = { ok: true; record: GraphTokenRecord; user: DirectoryUser } | { ok: false; message: string };

export class GraphService {
  private photoBytes: Buffer | undefined;

  constructor(private readonly state: EmulatorState) {}

  async handle(req: GraphRequest, ids: GraphIds): Promise<GraphResponse> {
    try {
      return await this.dispatch(req, ids);
    } catch (error: unknown) {
      if (error instanceof GraphQueryError) return graphError(error.status, error.code, error.message, ids);
      throw error;
    }
  }

  private async dispatch(req: GraphRequest, ids: GraphIds): Promise<GraphResponse> {
    const segments = req.path.split('/').filter(Boolean).map(safeDecode);
    const [version = '', ...rest] = segments;
    const isUserInfo = version === 'oidc' && rest.length === 1 && rest[0] === 'userinfo';
    if (!isUserInfo && version !== 'v1.0' && version !== 'beta') return graphError(400, 'BadRequest', `Invalid version: ${version}`, ids);

    const auth = this.authenticate(req.headers.authorization);
    if (!auth.ok) return graphError(401, 'InvalidAuthenticationToken', auth.message, ids, { 'WWW-Authenticate': UNAUTHORIZED_CHALLENGE });

    const fault = this.state.faults.graph.take((f) => pathMatches(f.path, req.path) && this.caeApplies(f, auth.record));
    if (fault) {
      if (fault.delayMs) await sleep(fault.delayMs);
      const faulted = faultResponse(fault, ids);
      if (faulted) return faulted;
    }

    if (isUserInfo) return this.userInfo(auth);
    if (rest[0] === '$batch' && rest.length === 1) {
      if (req.inBatch) return graphError(400, 'BadRequest', 'Nested batch requests are not supported.', ids);
      if (req.method !== 'POST') return methodNotAllowed(ids);
      return runBatch((item, itemIds) => this.handle(item, itemIds), req, version, ids);
    }
    if (req.method !== 'GET') return methodNotAllowed(ids);
    const response = this.resource(req, version, rest, auth, ids);
    if (
      fault?.nextLink !== undefined &&
      response.status === 200 &&
      typeof response.json === 'object' &&
      response.json !== null &&
      'value' in response.json
    ) {
      const { value, ...others } = response.json as Json;
      response.json = { ...others, '@odata.nextLink': fault.nextLink, value };
    }
    if (fault?.headers) response.headers = { ...response.headers, ...fault.headers };
    return response;
  }

  private resource(req: GraphRequest, version: string, rest: string[], auth: Auth & { ok: true }, ids: GraphIds): GraphResponse {
    const { user, record } = auth;
    const base = `${this.state.graphBaseUrl}/${version}`;
    const select = parseSelect(req.query);
    const tenant = this.state.tenantById(user.tenantId);
    const [first, second, third, fourth] = rest;
    const selectSuffix = select ? `(${select.join(',')})` : '';

    let target: DirectoryUser | undefined;
    let tail: (string | undefined)[];
    if (first === 'me') {
      target = user;
      tail = [second, third, fourth];
    } else if (first === 'users' && second !== undefined) {
      const key = second.toLowerCase();
      target = this.state.directory.users.find((u) => u.tenantId === user.tenantId && (u.id === key || u.userPrincipalName.toLowerCase() === key));
      const self = target === user;
      if (!granted(record, self ? READ_SELF : READ_USERS)) return forbidden(ids);
      if (!target)
        return graphError(
          404,
          'Request_ResourceNotFound',
          `Resource '${second}' does not exist or one of its queried reference-property objects are not present.`,
          ids,
        );
      tail = [third, fourth];
    } else if (first === 'users' && second === undefined) {
      if (!granted(record, READ_USERS)) return forbidden(ids);
      const items = this.state.directory.users.filter((u) => u.tenantId === user.tenantId).map((u) => projectUser(u, tenant, select));
      return ok(
        page(
          items,
          req.query,
          req.headers.consistencylevel,
          { collectionKey: `users:${user.tenantId}`, defaultSize: 100, maxSize: 999, directory: true },
          this.link(`/${version}/users`, `${base}/$metadata#users${selectSuffix}`),
        ),
      );
    } else {
      return graphError(400, 'BadRequest', `Resource not found for the segment '${first ?? ''}'.`, ids);
    }

    const [t1, t2, t3] = tail;
    const entityPath = first === 'me' ? `/${version}/me` : `/${version}/users/${second ?? ''}`;
    if (t1 === undefined) {
      if (!granted(record, READ_SELF)) return forbidden(ids);
      return ok({ '@odata.context': `${base}/$metadata#users${selectSuffix}/$entity`, ...projectUser(target, tenant, select) });
    }
    if (t1 === 'photo' && (t2 === undefined || (t2 === '$value' && t3 === undefined))) {
      if (!granted(record, READ_SELF)) return forbidden(ids);
      if (!target.hasPhoto) {
        return graphError(404, 'ImageNotFound', "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.", ids);
      }
      const photo = this.photo();
      const etag = `W/"${createHash('sha256').update(target.id).digest('hex').slice(0, 40)}"`;
      if (t2 === '$value') return { status: 200, headers: { 'Content-Type': 'image/jpeg', ETag: etag }, binary: photo };
      return ok({
        '@odata.context': `${base}/$metadata#users('${target.id}')/photo/$entity`,
        '@odata.mediaContentType': 'image/jpeg',
        '@odata.mediaEtag': etag,
        id: '648X648',
        height: 648,
        width: 648,
      });
    }
    if (first !== 'me') return graphError(400, 'BadRequest', `Resource not found for the segment '${t1}'.`, ids);
    if (t1 === 'memberOf' && t2 === undefined) {
      if (!granted(record, ['GroupMember.Read.All', 'Directory.Read.All'])) return forbidden(ids);
      const items = target.groupIds
        .map((id) => this.state.directory.objects.find((o) => o.id === id))
        .filter((o) => o !== undefined)
        .map((o) => (select ? project(directoryObjectEntity(o), select, 'microsoft.graph.directoryObject') : directoryObjectEntity(o)));
      return ok(
        page(
          items,
          req.query,
          req.headers.consistencylevel,
          { collectionKey: `memberOf:${target.id}`, defaultSize: 100, maxSize: 999, directory: true },
          this.link(`${entityPath}/memberOf`, `${base}/$metadata#directoryObjects`),
        ),
      );
    }
    if (t1 === 'messages') {
      if (!granted(record, ['Mail.Read', 'Mail.ReadBasic']))
        return graphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.', ids);
      const mailbox = this.state.directory.messages.get(target.id) ?? [];
      const shape = (m: (typeof mailbox)[number]): Json =>
        select ? project(messageEntity(m, target), select, 'microsoft.graph.message') : messageEntity(m, target);
      if (t2 !== undefined) {
        const message = mailbox.find((m) => m.id === t2);
        if (!message || t3 !== undefined) return graphError(404, 'ErrorItemNotFound', 'The specified object was not found in the store.', ids);
        return ok({ '@odata.context': `${base}/$metadata#users('${target.id}')/messages/$entity`, ...shape(message) });
      }
      return ok(
        page(
          mailbox.map(shape),
          req.query,
          req.headers.consistencylevel,
          { collectionKey: `messages:${target.id}`, defaultSize: 10, maxSize: 1000, directory: false },
          this.link(`${entityPath}/messages`, `${base}/$metadata#users('${target.id}')/messages${selectSuffix}`),
        ),
      );
    }
    return graphError(400, 'BadRequest', `Resource not found for the segment '${t1}'.`, ids);
  }

  private userInfo(auth: Auth & { ok: true }): GraphResponse {
    const { user } = auth;
    return ok({
      sub: createHash('sha256').update(`${user.id}|userinfo`).digest('base64url'),
      name: user.displayName,
      family_name: user.surname,
      given_name: user.givenName,
      picture: `${this.state.graphBaseUrl}/v1.0/me/photo/$value`,
      email: user.userPrincipalName,
    });
  }

  private authenticate(authorization: string | undefined): Auth {
    const match = /^Bearer +(\S+)$/i.exec(authorization ?? '');
    if (!match?.[1]) return { ok: false, message: 'Access token is empty.' };
    const jwt = decodeJwt(match[1]);
    if (!jwt) return { ok: false, message: 'IDX14100: JWT is not well formed.' };
    if (jwt.payload.aud !== GRAPH_RESOURCE && jwt.payload.aud !== GRAPH_APP_ID) {
      return { ok: false, message: 'Access token validation failure. Invalid audience.' };
    }
    const record = typeof jwt.payload.uti === 'string' ? this.state.graphTokens.get(jwt.payload.uti) : undefined;
    const key = record ? this.state.keys.find(record.kid) : undefined;
    if (!record || !key || !verifyRsa('RS256', jwt, key.publicKey) || jwt.payload.oid !== record.oid) {
      return { ok: false, message: 'Access token validation failure.' };
    }
    if (record.exp <= nowSeconds()) return { ok: false, message: 'Lifetime validation failed, the token is expired.' };
    const user = this.state.userByOid(record.tid, record.oid);
    if (!user) return { ok: false, message: 'Access token validation failure.' };
    return { ok: true, record, user };
  }

  /** Real Graph sends CAE challenges only to CAE-capable (cp1) clients. */
  private caeApplies(fault: GraphFault, record: GraphTokenRecord): boolean {
    return fault.caeClaims === undefined || fault.requireCp1 === false || record.cp1;
  }

  private link(path: string, context: string): { baseUrl: string; path: string; secret: Buffer; context: string } {
    return { baseUrl: this.state.graphBaseUrl, path, secret: this.state.pagingSecret, context };
  }

  private photo(): Buffer {
    this.photoBytes ??= makePhoto();
    return this.photoBytes;
  }
}

/** HTTP glue: builds a GraphRequest, adds Graph's response headers, writes JSON or bytes. */
export function graphHandler(state: EmulatorState, service: GraphService): (ctx: HttpContext) => Promise<void> {
  return async (ctx) => {
    state.counters.graph += 1;
    const clientRequestId = header(ctx.req, 'client-request-id') ?? ctx.requestId;
    ctx.note.clientRequestId = header(ctx.req, 'client-request-id');
    const ids: GraphIds = { requestId: ctx.requestId, clientRequestId };
    let body: unknown;
    if (ctx.method === 'POST') {
      const raw = await readBody(ctx.req, 4 * 1024 * 1024);
      try {
        body = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
      } catch {
        body = Symbol.for('invalid-json');
      }
    }
    const consistencylevel = header(ctx.req, 'consistencylevel');
    const authorization = header(ctx.req, 'authorization');
    const response = await service.handle(
      {
        method: ctx.method,
        path: ctx.path,
        query: ctx.url.searchParams,
        headers: { ...(authorization ? { authorization } : {}), ...(consistencylevel ? { consistencylevel } : {}) },
        body,
      },
      ids,
    );
    const headers: Record<string, string> = {
      ...response.headers,
      'request-id': ctx.requestId,
      'client-request-id': clientRequestId,
      'x-ms-ags-diagnostic': JSON.stringify({ ServerInfo: { DataCenter: 'Emulator', Slice: 'E', Ring: '0', ScaleUnit: '000', RoleInstance: 'EMU' } }),
      'Strict-Transport-Security': 'max-age=31536000',
    };
    if (response.status >= 400) ctx.note.error = errorCode(response);
    if (response.binary) return sendStream(ctx, response.status, headers, response.binary);
    if (response.text !== undefined) return sendText(ctx, response.status, headers['Content-Type'] ?? 'text/html', response.text, headers);
    if (response.json === undefined) {
      ctx.res.writeHead(response.status, headers);
      ctx.res.end();
      return;
    }
    sendJson(ctx, response.status, response.json, { 'Cache-Control': 'no-cache', 'OData-Version': '4.0', ...headers });
  };
}

function ok(json: Json): GraphResponse {
  return { status: 200, headers: { 'Content-Type': ODATA_JSON }, json };
}

function forbidden(ids: GraphIds): GraphResponse {
  return graphError(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.', ids);
}

function methodNotAllowed(ids: GraphIds): GraphResponse {
  return graphError(405, 'Request_BadRequest', 'Specified HTTP method is not allowed for the request target.', ids);
}

function granted(record: GraphTokenRecord, anyOf: string[]): boolean {
  return record.scopes.some((s) => anyOf.some((a) => a.toLowerCase() === s.toLowerCase()));
}

/** Prefix match on the full path, or on the path without its version segment. */
function pathMatches(prefix: string | undefined, path: string): boolean {
  if (prefix === undefined) return true;
  const unversioned = path.replace(/^\/(v1\.0|beta)(?=\/|$)/, '');
  return path.startsWith(prefix) || unversioned.startsWith(prefix);
}

function caeClaimsJson(claims: string): string {
  try {
    return JSON.stringify(JSON.parse(claims));
  } catch {
    return Buffer.from(claims, 'base64').toString('utf8');
  }
}

const DEFAULT_FAULTS: Record<number, [string, string]> = {
  400: ['BadRequest', 'Invalid request.'],
  401: ['InvalidAuthenticationToken', 'Access token validation failure.'],
  403: ['Authorization_RequestDenied', 'Insufficient privileges to complete the operation.'],
  404: ['Request_ResourceNotFound', 'Resource does not exist or one of its queried reference-property objects are not present.'],
  429: ['TooManyRequests', 'Please retry again later.'],
  500: ['generalException', 'General exception while processing.'],
  502: ['UnknownError', ''],
  503: ['serviceNotAvailable', 'Service is unavailable.'],
  504: ['UnknownError', ''],
};

/** The response an injected fault produces, or undefined for a delay-only fault. */
function faultResponse(fault: GraphFault, ids: GraphIds): GraphResponse | undefined {
  const headers: Record<string, string> = { ...fault.headers };
  if (fault.retryAfter !== undefined) headers['Retry-After'] = String(fault.retryAfter);
  if (fault.caeClaims !== undefined) {
    const json = caeClaimsJson(fault.caeClaims);
    headers['WWW-Authenticate'] =
      `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="${Buffer.from(json).toString('base64')}"`;
    return graphError(
      401,
      fault.code ?? 'InvalidAuthenticationToken',
      fault.message ??
        'Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp',
      ids,
      headers,
    );
  }
  if (fault.body === 'non-json') {
    return {
      status: fault.status ?? 502,
      headers: { ...headers, 'Content-Type': 'text/html' },
      text: '<html><body><h1>Bad gateway</h1></body></html>',
    };
  }
  if (fault.status === undefined || fault.status < 300) return undefined; // 2xx = just the delay
  const [code, message] = DEFAULT_FAULTS[fault.status] ?? ['UnknownError', ''];
  const inner = fault.status === 429 ? { code: '429', status: '429' } : {};
  return graphError(fault.status, fault.code ?? code, fault.message ?? message, ids, headers, inner);
}

function errorCode(response: GraphResponse): string {
  const json = response.json;
  if (typeof json === 'object' && json !== null && 'error' in json) {
    const error = json.error;
    if (typeof error === 'object' && error !== null && 'code' in error) return String(error.code);
  }
  return String(response.status);
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
