// Graph resource shapes ($select projection, OData context), paging with opaque
// $skiptoken + absolute @odata.nextLink, and the deterministic profile photo.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { DirectoryObject, DirectoryUser, Message, Tenant } from './seed.js';

export type Json = Record<string, unknown>;

export interface GraphRequest {
  method: string;
  /** Full path including the version segment, e.g. '/v1.0/me/messages'. */
  path: string;
  query: URLSearchParams;
  headers: { authorization?: string; consistencylevel?: string };
  body?: unknown;
  inBatch?: boolean;
}

export interface GraphResponse {
  status: number;
  headers: Record<string, string>;
  json?: unknown;
  binary?: Buffer;
  text?: string;
}

export interface GraphIds {
  requestId: string;
  clientRequestId: string;
}

export const ODATA_JSON = 'application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8';

export function graphError(
  status: number,
  code: string,
  message: string,
  ids: GraphIds,
  headers: Record<string, string> = {},
  inner: Json = {},
): GraphResponse {
  return {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
    json: {
      error: {
        code,
        message,
        innerError: { ...inner, date: new Date().toISOString().slice(0, 19), 'request-id': ids.requestId, 'client-request-id': ids.clientRequestId },
      },
    },
  };
}

export class GraphQueryError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const USER_DEFAULT = [
  'businessPhones',
  'displayName',
  'givenName',
  'jobTitle',
  'mail',
  'mobilePhone',
  'officeLocation',
  'preferredLanguage',
  'surname',
  'userPrincipalName',
  'id',
];

function userEntity(user: DirectoryUser, tenant: Tenant | undefined): Json {
  const alias = user.userPrincipalName.split('@')[0] ?? '';
  return {
    businessPhones: user.businessPhones,
    displayName: user.displayName,
    givenName: user.givenName,
    jobTitle: user.jobTitle,
    mail: user.userPrincipalName,
    mobilePhone: user.mobilePhone,
    officeLocation: user.officeLocation,
    preferredLanguage: user.preferredLanguage,
    surname: user.surname,
    userPrincipalName: user.userPrincipalName,
    id: user.id,
    accountEnabled: true,
    city: null,
    companyName: tenant?.displayName ?? null,
    country: null,
    createdDateTime: user.createdDateTime,
    department: user.department,
    employeeId: null,
    mailNickname: alias,
    usageLocation: 'US',
    userType: 'Member',
  };
}

export function projectUser(user: DirectoryUser, tenant: Tenant | undefined, select: string[] | undefined): Json {
  return project(userEntity(user, tenant), select ?? USER_DEFAULT, 'microsoft.graph.user');
}

export function directoryObjectEntity(object: DirectoryObject): Json {
  if (object.kind === 'directoryRole') {
    return {
      '@odata.type': '#microsoft.graph.directoryRole',
      id: object.id,
      deletedDateTime: null,
      description: object.description,
      displayName: object.displayName,
      roleTemplateId: 'cf1c38e5-3621-4004-a7cb-879624dced7c',
    };
  }
  return {
    '@odata.type': '#microsoft.graph.group',
    id: object.id,
    deletedDateTime: null,
    classification: null,
    createdDateTime: '2023-03-14T09:30:00Z',
    description: object.description,
    displayName: object.displayName,
    groupTypes: object.mail ? ['Unified'] : [],
    mail: object.mail,
    mailEnabled: object.mail !== null,
    mailNickname: object.displayName.replace(/\W+/g, '').toLowerCase(),
    securityEnabled: object.mail === null,
    visibility: object.mail ? 'Private' : null,
  };
}

export function messageEntity(message: Message, owner: DirectoryUser): Json {
  return {
    '@odata.etag': `W/"CQAAABYAAAC${message.id.slice(-12)}"`,
    id: message.id,
    createdDateTime: message.receivedDateTime,
    lastModifiedDateTime: message.receivedDateTime,
    receivedDateTime: message.receivedDateTime,
    sentDateTime: message.receivedDateTime,
    hasAttachments: message.hasAttachments,
    subject: message.subject,
    bodyPreview: message.bodyPreview,
    importance: message.importance,
    isRead: message.isRead,
    isDraft: false,
    from: { emailAddress: { name: message.from.name, address: message.from.address } },
    toRecipients: [{ emailAddress: { name: owner.displayName, address: owner.userPrincipalName } }],
  };
}

/** Keeps the `select`ed members (case-insensitive); unknown names are a 400 like Graph's. */
export function project(entity: Json, select: string[], typeName: string): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(entity)) if (k.startsWith('@odata.')) out[k] = v;
  for (const wanted of select) {
    const name = Object.keys(entity).find((k) => k.toLowerCase() === wanted.toLowerCase());
    if (!name) throw new GraphQueryError(400, 'BadRequest', `Could not find a property named '${wanted}' on type '${typeName}'.`);
    out[name] = entity[name];
  }
  return out;
}

export function parseSelect(query: URLSearchParams): string[] | undefined {
  const raw = query.get('$select');
  if (raw === null) return undefined;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export interface PageOptions {
  /** Binds skiptokens to one collection of one caller. */
  collectionKey: string;
  defaultSize: number;
  maxSize: number;
  /** Directory collections need `ConsistencyLevel: eventual` for $count. */
  directory: boolean;
}

export function page(
  items: Json[],
  query: URLSearchParams,
  consistencyLevel: string | undefined,
  options: PageOptions,
  link: { baseUrl: string; path: string; secret: Buffer; context: string },
): Json {
  let offset = 0;
  let size = options.defaultSize;
  const skiptoken = query.get('$skiptoken');
  if (skiptoken !== null) {
    const state = readSkiptoken(skiptoken, options.collectionKey, link.secret);
    offset = state.offset;
    size = state.size;
  } else if (query.get('$top') !== null) {
    const top = query.get('$top') ?? '';
    size = /^\d+$/.test(top) ? Number(top) : Number.NaN;
    if (!(size >= 1 && size <= options.maxSize)) {
      throw new GraphQueryError(
        400,
        'Request_BadRequest',
        `Invalid page size specified: '${top}'. Must be between 1 and ${options.maxSize} inclusive.`,
      );
    }
  }
  const wantCount = query.get('$count')?.toLowerCase() === 'true';
  if (wantCount && options.directory && consistencyLevel?.toLowerCase() !== 'eventual') {
    throw new GraphQueryError(400, 'Request_BadRequest', '$count is not currently supported.');
  }
  const body: Json = { '@odata.context': link.context };
  if (wantCount && skiptoken === null) body['@odata.count'] = items.length;
  if (offset + size < items.length) {
    const token = writeSkiptoken(options.collectionKey, offset + size, size, link.secret);
    const kept = [...query.entries()].filter(([k]) => k !== '$skiptoken').map(([k, v]) => `${k}=${encodeURIComponent(v)}`);
    body['@odata.nextLink'] = `${link.baseUrl}${link.path}?${[...kept, `$skiptoken=${token}`].join('&')}`;
  }
  body.value = items.slice(offset, offset + size);
  return body;
}

function writeSkiptoken(key: string, offset: number, size: number, secret: Buffer): string {
  const payload = Buffer.from(JSON.stringify({ k: key, o: offset, n: size })).toString('base64url');
  return `RFNwdAIA${payload}.${mac(payload, secret)}`;
}

function readSkiptoken(token: string, key: string, secret: Buffer): { offset: number; size: number } {
  const invalid = new GraphQueryError(400, 'Request_BadRequest', "The value of '$skiptoken' is invalid.");
  const match = /^RFNwdAIA([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token);
  if (!match?.[1] || !match[2]) throw invalid;
  const expected = Buffer.from(mac(match[1], secret));
  const given = Buffer.from(match[2]);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw invalid;
  const parsed: unknown = JSON.parse(Buffer.from(match[1], 'base64url').toString('utf8'));
  if (typeof parsed !== 'object' || parsed === null) throw invalid;
  const { k, o, n } = parsed as { k?: unknown; o?: unknown; n?: unknown };
  if (k !== key || typeof o !== 'number' || typeof n !== 'number') throw invalid;
  return { offset: o, size: n };
}

function mac(payload: string, secret: Buffer): string {
  return createHmac('sha256', secret).update(payload).digest('base64url').slice(0, 22);
}

/** ~2 MiB of deterministic bytes framed as a JPEG (SOI/APP0 … EOI). */
export function makePhoto(size = 2 * 1024 * 1024): Buffer {
  const photo = Buffer.alloc(size);
  const head = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
  head.copy(photo);
  let x = 0x2545f491;
  for (let i = head.length; i < size - 2; i += 1) {
    // xorshift32: fast, deterministic filler
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    photo[i] = x & 0xff;
  }
  photo[size - 2] = 0xff;
  photo[size - 1] = 0xd9;
  return photo;
}
