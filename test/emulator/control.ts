// /_emulator/* on the Entra server: the same controls as the Emulator object, over HTTP
// (JSON in, JSON out), for black-box runs and curl users.
import { readBody, sendJson, type HttpContext } from './http.js';
import { isJsonObject, type JsonObject } from './jwt.js';
import type { Emulator, MintOptions, RawTokenParts, UserFlags, UserName } from './types.js';

const USERS: UserName[] = ['alice', 'bob', 'carol'];

class BadInput extends Error {}

export function controlHandler(emulator: () => Emulator): (ctx: HttpContext) => Promise<void> {
  return async (ctx) => {
    const e = emulator();
    const route = `${ctx.method} ${ctx.path.replace(/\/+$/, '')}`;
    try {
      const body = ctx.method === 'POST' ? await jsonBody(ctx) : {};
      const reply = (value: unknown): void => sendJson(ctx, 200, value);
      let m: RegExpExecArray | null;
      switch (route) {
        case 'GET /_emulator':
          return reply(info(e));
        case 'POST /_emulator/mint':
          return reply({ token: e.mint(mintOptions(body)) });
        case 'POST /_emulator/mint/raw':
          return reply({ token: e.mintRaw(rawParts(body)) });
        case 'POST /_emulator/mint/id-token':
          return reply({
            token: e.mintIdToken(user(body.user), {
              ...optString(body, 'aud'),
              ...optString(body, 'nonce'),
              ...(body.version === 1 ? { version: 1 } : {}),
            }),
          });
        case 'POST /_emulator/mint/graph-replay':
          return reply({ token: e.mintGraphTokenReplay(user(body.user)) });
        case 'POST /_emulator/mint/graph':
          return reply({
            token: e.mintGraphToken({
              user: user(body.user),
              ...optString(body, 'scp'),
              ...optNumber(body, 'lifetimeSeconds'),
              ...(Array.isArray(body.xms_cc) ? { xms_cc: body.xms_cc.map(String) } : {}),
            }),
          });
        case 'POST /_emulator/faults/token':
          e.faults.injectToken(body);
          return reply(e.faults.pending());
        case 'POST /_emulator/faults/jwks':
          e.faults.injectJwks(body);
          return reply(e.faults.pending());
        case 'POST /_emulator/faults/openid-configuration':
          e.faults.injectOpenidConfiguration(body);
          return reply(e.faults.pending());
        case 'POST /_emulator/faults/graph':
          e.faults.injectGraph(body);
          return reply(e.faults.pending());
        case 'POST /_emulator/faults/jwks-down':
          e.faults.jwksDown(body.down !== false, body.mode === 'close' ? 'close' : 'status');
          return reply({ down: body.down !== false });
        case 'POST /_emulator/faults/clear':
          e.faults.clear();
          return reply(e.faults.pending());
        case 'GET /_emulator/keys':
          return reply({
            current: e.keys.currentKid,
            previous: e.keys.previousKid,
            unpublished: e.keys.unpublishedKid,
            msa: e.keys.msaKid,
            keys: e.keys.list(),
          });
        case 'POST /_emulator/keys/rotate':
          return reply({ kid: await e.keys.rotate() });
        case 'POST /_emulator/keys/retire':
          e.keys.retire(requiredString(body, 'kid'));
          return reply({ published: e.keys.publishedKids() });
        case 'POST /_emulator/keys/publish':
          e.keys.publish(requiredString(body, 'kid'));
          return reply({ published: e.keys.publishedKids() });
        case 'GET /_emulator/counters':
          return reply(e.counters);
        case 'POST /_emulator/counters/reset':
          e.resetCounters();
          return reply(e.counters);
        case 'GET /_emulator/requests':
          return reply(e.requests());
        case 'POST /_emulator/reset':
          e.reset();
          return reply({ reset: true });
      }
      if (ctx.method === 'POST' && (m = /^\/_emulator\/users\/([^/]+)$/.exec(ctx.path))) {
        e.setUser(user(m[1]), userFlags(body));
        return reply({ user: m[1] });
      }
      sendJson(ctx, 404, { error: 'not_found', error_description: `No control endpoint ${route}` });
    } catch (error: unknown) {
      sendJson(ctx, 400, { error: 'bad_request', error_description: error instanceof Error ? error.message : String(error) });
    }
  };
}

function info(e: Emulator): JsonObject {
  return {
    authorityHost: e.authorityHost,
    graphBaseUrl: e.graphBaseUrl,
    tenant: e.tenant,
    otherTenant: e.otherTenant,
    api: { clientId: e.api.clientId, appIdUri: e.api.appIdUri, certificateThumbprintSha256: e.api.certificateThumbprintSha256 },
    spa: e.spa,
    otherApi: e.otherApi,
    users: e.users,
  };
}

async function jsonBody(ctx: HttpContext): Promise<JsonObject> {
  const raw = (await readBody(ctx.req)).toString('utf8');
  if (raw.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new BadInput('the body must be JSON');
  }
  if (!isJsonObject(parsed)) throw new BadInput('the body must be a JSON object');
  return parsed;
}

function user(value: unknown): UserName {
  if (value === undefined) return 'alice';
  const found = USERS.find((u) => u === value);
  if (!found) throw new BadInput(`unknown user ${JSON.stringify(value)}`);
  return found;
}

function mintOptions(body: JsonObject): MintOptions {
  const options: MintOptions = { user: user(body.user) };
  if (body.version !== undefined) {
    if (body.version !== 1 && body.version !== 2) throw new BadInput('version must be 1 or 2');
    options.version = body.version;
  }
  for (const name of ['aud', 'iss', 'tid', 'exp', 'iat', 'nbf'] as const) if (name in body) options[name] = body[name];
  if (body.scp === null || typeof body.scp === 'string') options.scp = body.scp;
  if (Array.isArray(body.roles)) options.roles = body.roles.map(String);
  if (typeof body.idtyp === 'string') options.idtyp = body.idtyp;
  if (typeof body.lifetimeSeconds === 'number') options.lifetimeSeconds = body.lifetimeSeconds;
  if (isJsonObject(body.extraClaims)) options.extraClaims = body.extraClaims;
  if (isJsonObject(body.header)) options.header = body.header;
  if (typeof body.key === 'string') options.key = body.key;
  if (Array.isArray(body.xms_cc)) options.xms_cc = body.xms_cc.map(String);
  if (body.appOnly === true) options.appOnly = true;
  return options;
}

function rawParts(body: JsonObject): RawTokenParts {
  const { header, payload } = body;
  if (!(typeof header === 'string' || isJsonObject(header)) || !(typeof payload === 'string' || isJsonObject(payload))) {
    throw new BadInput('header and payload must be objects or strings');
  }
  const parts: RawTokenParts = { header, payload };
  const signModes = ['rs256', 'none', 'hs256-with-public-key', 'invalid', 'alg'] as const;
  const sign = signModes.find((s) => s === body.sign);
  if (body.sign !== undefined && !sign) throw new BadInput(`sign must be one of ${signModes.join(', ')}`);
  if (sign) parts.sign = sign;
  if (typeof body.key === 'string') parts.key = body.key;
  if (typeof body.signature === 'string') parts.signature = body.signature;
  return parts;
}

function userFlags(body: JsonObject): Partial<UserFlags> {
  const flags: Partial<UserFlags> = {};
  if (typeof body.consented === 'boolean') flags.consented = body.consented;
  if (Array.isArray(body.consentedScopes)) flags.consentedScopes = body.consentedScopes.map(String);
  if (typeof body.mfaRequired === 'boolean') flags.mfaRequired = body.mfaRequired;
  if (body.caClaims === null || typeof body.caClaims === 'string') flags.caClaims = body.caClaims;
  return flags;
}

function requiredString(body: JsonObject, name: string): string {
  const value = body[name];
  if (typeof value !== 'string') throw new BadInput(`'${name}' is required`);
  return value;
}

function optString<K extends string>(body: JsonObject, name: K): Partial<Record<K, string>> {
  const value = body[name];
  return typeof value === 'string' ? ({ [name]: value } as Record<K, string>) : {};
}

function optNumber<K extends string>(body: JsonObject, name: K): Partial<Record<K, number>> {
  const value = body[name];
  return typeof value === 'number' ? ({ [name]: value } as Record<K, number>) : {};
}
