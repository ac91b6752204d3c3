// Scope parsing for the token endpoint: OIDC scopes dropped, one resource only, Graph is the
// only downstream resource the emulator issues tokens for.
import { errors, type EntraError } from './entra-errors.js';
import { GRAPH_APP_ID, GRAPH_RESOURCE, GRAPH_SCOPES } from './seed.js';

const OIDC_SCOPES = new Set(['openid', 'profile', 'offline_access', 'email']);
const GRAPH_IDS = new Set([GRAPH_RESOURCE, GRAPH_APP_ID]);

export interface RequestedScope {
  /** As sent by the client, e.g. 'https://graph.microsoft.com/User.Read' or 'User.Read'. */
  raw: string;
  /** Canonical Graph scope name, or '.default'. */
  name: string;
  /** Resource prefix as sent ('' for short scopes), e.g. 'https://graph.microsoft.com/'. */
  prefix: string;
}

export type ScopeResult = { ok: true; scopes: RequestedScope[]; isDefault: boolean } | { ok: false; error: EntraError };

export function parseScopes(scopeParam: string, tenantName: string): ScopeResult {
  const items = scopeParam.split(/\s+/).filter(Boolean);
  const resourceScopes = items.filter((s) => !OIDC_SCOPES.has(s.toLowerCase()));
  if (resourceScopes.length === 0) {
    return { ok: false, error: errors.invalidScope(scopeParam, 'The scope must name a resource.') };
  }
  const parsed = resourceScopes.map((raw) => {
    const slash = raw.lastIndexOf('/');
    const resource = slash < 0 ? GRAPH_RESOURCE : raw.slice(0, slash);
    return {
      raw,
      resource: resource.toLowerCase().replace(/\/+$/, ''),
      prefix: slash < 0 ? '' : raw.slice(0, slash + 1),
      name: raw.slice(slash + 1),
    };
  });
  const resources = new Set(parsed.map((p) => p.resource));
  if (resources.size > 1) return { ok: false, error: errors.multipleResources(scopeParam) };
  const [resource = ''] = resources;
  if (!GRAPH_IDS.has(resource)) return { ok: false, error: errors.unknownResource(resource, tenantName) };

  const scopes: RequestedScope[] = [];
  for (const p of parsed) {
    const name = p.name === '.default' ? '.default' : GRAPH_SCOPES.find((known) => known.toLowerCase() === p.name.toLowerCase());
    if (!name) return { ok: false, error: errors.invalidScope(p.raw, `The scope '${p.name}' does not exist on the resource.`) };
    if (!scopes.some((s) => s.name === name)) scopes.push({ raw: p.raw, name, prefix: p.prefix });
  }
  const isDefault = scopes.some((s) => s.name === '.default');
  if (isDefault && scopes.length > 1) {
    return { ok: false, error: errors.invalidScope(scopeParam, "'.default' cannot be combined with resource-specific scopes.") };
  }
  return { ok: true, scopes, isDefault };
}

/** True when every member of `required.access_token` is present, deep-equal, in `presented.access_token`. */
export function claimsSatisfied(required: string, presented: unknown): boolean {
  let challenge: unknown;
  try {
    challenge = JSON.parse(required);
  } catch {
    return false;
  }
  return containsDeep(challenge, presented);
}

function containsDeep(needle: unknown, haystack: unknown): boolean {
  if (typeof needle !== 'object' || needle === null) return needle === haystack;
  if (Array.isArray(needle)) {
    return Array.isArray(haystack) && needle.length === haystack.length && needle.every((v, i) => containsDeep(v, haystack[i]));
  }
  if (typeof haystack !== 'object' || haystack === null || Array.isArray(haystack)) return false;
  const bag = haystack as Record<string, unknown>;
  return Object.entries(needle).every(([k, v]) => containsDeep(v, bag[k]));
}
