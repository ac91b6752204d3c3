// The Entra ID side: OpenID metadata (v1 + v2), JWKS, instance discovery, an authorize stub
// and the token endpoint. /_emulator/* is handed to the control API.
import { randomUUID } from 'node:crypto';
import { errors, sendEntraError } from './entra-errors.js';
import { header, sendJson, sendText, sleep, type HttpContext } from './http.js';
import { MSA_TENANT_ID } from './seed.js';
import type { EmulatorState, TenantRef } from './state.js';
import { handleTokenRequest } from './token-endpoint.js';
import type { TokenFactory } from './tokens.js';
import type { JwksFault } from './types.js';

const METADATA_HEADERS = { 'Cache-Control': 'max-age=86400, private', 'Access-Control-Allow-Origin': '*' };

export function entraHandler(
  state: EmulatorState,
  tokens: TokenFactory,
  control: (ctx: HttpContext) => Promise<void>,
): (ctx: HttpContext) => Promise<void> {
  return async (ctx) => {
    const path = ctx.path;
    if (path === '/_emulator' || path.startsWith('/_emulator/')) return control(ctx);
    const correlationId = header(ctx.req, 'client-request-id') ?? randomUUID();
    let m: RegExpExecArray | null;

    if ((m = /^\/([^/]+)\/oauth2\/v2\.0\/token\/?$/.exec(path))) return handleTokenRequest(ctx, state, tokens, decode(m[1]));
    if ((m = /^\/([^/]+)\/discovery\/instance\/?$/.exec(path))) return instanceDiscovery(ctx, state, decode(m[1]), correlationId);

    if ((m = /^\/([^/]+)\/(v2\.0\/)?\.well-known\/openid-configuration\/?$/.exec(path))) {
      state.counters.openidConfiguration += 1;
      const ref = state.resolveTenant(decode(m[1]));
      if (!ref) return sendEntraError(ctx, errors.tenantNotFound(decode(m[1]), 'invalid_tenant'), correlationId);
      if (await applyFault(ctx, state.faults.openidConfiguration.take(), false)) return;
      const body = m[2] ? v2Metadata(state, ref, decode(m[1])) : v1Metadata(state, ref, decode(m[1]));
      return sendJson(ctx, 200, body, { ...METADATA_HEADERS, 'x-ms-request-id': ctx.requestId });
    }

    if ((m = /^\/([^/]+)\/discovery\/(v2\.0\/)?keys\/?$/.exec(path))) {
      state.counters.jwks += 1;
      if (state.faults.jwksDown === 'close') {
        ctx.note.fault = 'jwks down (close)';
        ctx.req.socket.destroy();
        return;
      }
      if (state.faults.jwksDown === 'status') {
        ctx.note.fault = 'jwks down (500)';
        return sendJson(
          ctx,
          500,
          { error: 'server_error', error_description: 'The JWKS endpoint is unavailable.' },
          { 'x-ms-request-id': ctx.requestId },
        );
      }
      const ref = state.resolveTenant(decode(m[1]));
      if (!ref) return sendEntraError(ctx, errors.tenantNotFound(decode(m[1]), 'invalid_tenant'), correlationId);
      if (await applyFault(ctx, state.faults.jwks.take(), true)) return;
      return sendJson(
        ctx,
        200,
        state.keys.jwks((key) => state.keyIssuer(key)),
        { ...METADATA_HEADERS, 'x-ms-request-id': ctx.requestId },
      );
    }

    if (/^\/([^/]+)\/oauth2\/(v2\.0\/)?authorize\/?$/.test(path)) {
      // Interactive sign-in is not emulated; the URL exists so challenges can point at it.
      return sendJson(
        ctx,
        200,
        {
          emulator: 'Microsoft Entra ID emulator',
          message: 'Interactive sign-in is not emulated. Mint user tokens with POST /_emulator/mint.',
        },
        { 'x-ms-request-id': ctx.requestId },
      );
    }

    ctx.note.error = 'not_found';
    sendJson(
      ctx,
      404,
      { error: 'not_found', error_description: `No emulated endpoint at ${ctx.method} ${path}` },
      { 'x-ms-request-id': ctx.requestId },
    );
  };
}

/** Applies a metadata/JWKS fault; returns true when the response was written. */
async function applyFault(ctx: HttpContext, fault: JwksFault | undefined, isJwks: boolean): Promise<boolean> {
  if (!fault) return false;
  ctx.note.fault =
    `${isJwks ? 'jwks' : 'openid-configuration'} ${fault.status ?? ''} ${fault.body ?? ''} ${fault.delayMs ? `+${fault.delayMs}ms` : ''}`
      .replace(/\s+/g, ' ')
      .trim();
  if (fault.delayMs) await sleep(fault.delayMs);
  if (ctx.res.destroyed) return true;
  if (fault.body === 'empty') {
    sendJson(ctx, fault.status ?? 200, isJwks ? { keys: [] } : {}, { 'x-ms-request-id': ctx.requestId });
    return true;
  }
  if (fault.body === 'non-json') {
    sendText(ctx, fault.status ?? 200, 'text/html; charset=utf-8', '<html><body>Service unavailable</body></html>', {
      'x-ms-request-id': ctx.requestId,
    });
    return true;
  }
  if (fault.status !== undefined && fault.status >= 300) {
    sendJson(ctx, fault.status, { error: 'temporarily_unavailable', error_description: 'Injected fault.' }, { 'x-ms-request-id': ctx.requestId });
    return true;
  }
  return false;
}

function v2Metadata(state: EmulatorState, ref: TenantRef, segment: string): Record<string, unknown> {
  const o = state.authorityHost;
  const { pathTenant, issuerTenant } = metadataTenants(ref, segment);
  return {
    token_endpoint: `${o}/${pathTenant}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    jwks_uri: `${o}/${pathTenant}/discovery/v2.0/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    issuer: state.v2Issuer(issuerTenant),
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${state.graphBaseUrl}/oidc/userinfo`,
    authorization_endpoint: `${o}/${pathTenant}/oauth2/v2.0/authorize`,
    device_authorization_endpoint: `${o}/${pathTenant}/oauth2/v2.0/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${o}/${pathTenant}/oauth2/v2.0/logout`,
    claims_supported: [
      'sub',
      'iss',
      'cloud_instance_name',
      'cloud_instance_host_name',
      'cloud_graph_host_name',
      'msgraph_host',
      'aud',
      'exp',
      'iat',
      'auth_time',
      'acr',
      'nonce',
      'preferred_username',
      'name',
      'tid',
      'ver',
      'at_hash',
      'c_hash',
      'email',
    ],
    kerberos_endpoint: `${o}/${pathTenant}/kerberos`,
    tenant_region_scope: ref.kind === 'tenant' ? 'NA' : null,
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: new URL(state.graphBaseUrl).host,
    rbac_url: 'https://pas.windows.net',
  };
}

function v1Metadata(state: EmulatorState, ref: TenantRef, segment: string): Record<string, unknown> {
  const o = state.authorityHost;
  const { pathTenant, issuerTenant } = metadataTenants(ref, segment);
  return {
    token_endpoint: `${o}/${pathTenant}/oauth2/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    jwks_uri: `${o}/${pathTenant}/discovery/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'token id_token', 'token'],
    scopes_supported: ['openid'],
    issuer: state.v1Issuer(issuerTenant),
    microsoft_multi_refresh_token: true,
    authorization_endpoint: `${o}/${pathTenant}/oauth2/authorize`,
    device_authorization_endpoint: `${o}/${pathTenant}/oauth2/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${o}/${pathTenant}/oauth2/logout`,
    claims_supported: [
      'sub',
      'iss',
      'cloud_instance_name',
      'cloud_instance_host_name',
      'cloud_graph_host_name',
      'msgraph_host',
      'aud',
      'exp',
      'iat',
      'auth_time',
      'acr',
      'amr',
      'nonce',
      'email',
      'given_name',
      'family_name',
      'nickname',
    ],
    check_session_iframe: `${o}/${pathTenant}/oauth2/checksession`,
    userinfo_endpoint: `${o}/${pathTenant}/openid/userinfo`,
    kerberos_endpoint: `${o}/${pathTenant}/kerberos`,
    tenant_region_scope: ref.kind === 'tenant' ? 'NA' : null,
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: new URL(state.graphBaseUrl).host,
    rbac_url: 'https://pas.windows.net',
  };
}

/** Concrete tenants resolve to their GUID in endpoints; common/organizations keep the name and use the template issuer. */
function metadataTenants(ref: TenantRef, segment: string): { pathTenant: string; issuerTenant: string } {
  switch (ref.kind) {
    case 'tenant':
      return { pathTenant: ref.tenant.id, issuerTenant: ref.tenant.id };
    case 'msa':
      return { pathTenant: segment.toLowerCase() === 'consumers' ? 'consumers' : MSA_TENANT_ID, issuerTenant: MSA_TENANT_ID };
    default:
      return { pathTenant: ref.kind, issuerTenant: '{tenantid}' };
  }
}

function instanceDiscovery(ctx: HttpContext, state: EmulatorState, segment: string, correlationId: string): void {
  state.counters.instanceDiscovery += 1;
  if (!state.resolveTenant(segment)) return sendEntraError(ctx, errors.tenantNotFound(segment), correlationId);
  const endpoint = ctx.url.searchParams.get('authorization_endpoint');
  if (!endpoint) return sendEntraError(ctx, errors.missingParameter('authorization_endpoint'), correlationId);
  let target: URL;
  try {
    target = new URL(endpoint);
  } catch {
    return sendEntraError(ctx, errors.invalidInstance(), correlationId);
  }
  const own = new URL(state.authorityHost);
  const aliases = [own.host, `localhost:${own.port}`];
  if (target.protocol !== 'https:' || !aliases.includes(target.host)) return sendEntraError(ctx, errors.invalidInstance(), correlationId);
  const tenant = target.pathname.split('/').filter(Boolean)[0] ?? 'common';
  sendJson(
    ctx,
    200,
    {
      tenant_discovery_endpoint: `https://${target.host}/${tenant}/v2.0/.well-known/openid-configuration`,
      'api-version': ctx.url.searchParams.get('api-version') ?? '1.1',
      metadata: [{ preferred_network: own.host, preferred_cache: own.host, aliases }],
    },
    { ...METADATA_HEADERS, 'x-ms-request-id': ctx.requestId },
  );
}

function decode(segment: string | undefined): string {
  try {
    return decodeURIComponent(segment ?? '');
  } catch {
    return segment ?? '';
  }
}
