// Per-instance mutable state: seeded directory, key ring, user flags, counters, request log,
// faults and the registry of Graph tokens this instance issued.
import { randomBytes } from 'node:crypto';
import { Faults } from './faults.js';
import type { KeyRing, SigningKey } from './keys.js';
import { DEFAULT_CONSENT, MSA_TENANT_ID, syntheticUser, type Directory, type DirectoryUser, type Tenant } from './seed.js';
import type { Counters, RequestLogEntry, UserFlags, UserName } from './types.js';

const LOG_LIMIT = 5_000;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface GraphTokenRecord {
  uti: string;
  kid: string;
  oid: string;
  tid: string;
  /** Canonical Graph scope names granted (plus openid/profile/email). */
  scopes: string[];
  exp: number;
  /** The `claims` request parameter the token was issued with, parsed. */
  claims: unknown;
  cp1: boolean;
}

/** What a `{tenant}` path segment names. */
export type TenantRef = { kind: 'tenant'; tenant: Tenant } | { kind: 'msa' } | { kind: 'common' } | { kind: 'organizations' };

export class EmulatorState {
  authorityHost = '';
  graphBaseUrl = '';
  readonly counters: Counters = { token: 0, clientCredentials: 0, jwks: 0, openidConfiguration: 0, graph: 0, instanceDiscovery: 0 };
  /** Lifetime of app tokens from the client-credentials grant (a test shortens it). */
  appTokenLifetimeSeconds = 3599;
  readonly faults = new Faults();
  readonly graphTokens = new Map<string, GraphTokenRecord>();
  /** Keys skiptokens so a client cannot forge or reuse them across instances. */
  readonly pagingSecret = randomBytes(32);
  private log: RequestLogEntry[] = [];
  private flags = new Map<UserName, UserFlags>();
  /** Users made up from unknown oids (option `syntheticUsers`), by oid. */
  private readonly synthetic = new Map<string, DirectoryUser>();

  constructor(
    readonly directory: Directory,
    readonly keys: KeyRing,
    readonly options: { issuerStyle: 'microsoft' | 'origin'; accessTokenLifetimeSeconds: number; syntheticUsers: boolean },
  ) {
    this.resetFlags();
  }

  resolveTenant(segment: string): TenantRef | undefined {
    const s = segment.toLowerCase();
    if (s === 'common') return { kind: 'common' };
    if (s === 'organizations') return { kind: 'organizations' };
    if (s === 'consumers' || s === MSA_TENANT_ID) return { kind: 'msa' };
    for (const tenant of [this.directory.tenant, this.directory.otherTenant]) {
      if (s === tenant.id || s === tenant.domain) return { kind: 'tenant', tenant };
    }
    return undefined;
  }

  tenantById(tid: unknown): Tenant | undefined {
    return [this.directory.tenant, this.directory.otherTenant].find((t) => t.id === tid);
  }

  /** The v2 issuer of a tenant (or of the `{tenantid}` template). */
  v2Issuer(tid: string): string {
    return this.options.issuerStyle === 'origin' ? `${this.authorityHost}/${tid}/v2.0` : `https://login.microsoftonline.com/${tid}/v2.0`;
  }

  v1Issuer(tid: string): string {
    return `https://sts.windows.net/${tid}/`;
  }

  /** The JWK `issuer`: template for shared keys, concrete for tenant-bound ones. */
  keyIssuer(key: SigningKey): string {
    return this.v2Issuer(key.boundTenant ?? '{tenantid}');
  }

  userByOid(tid: unknown, oid: unknown): DirectoryUser | undefined {
    const seeded = this.directory.users.find((u) => u.tenantId === tid && u.id === oid);
    if (seeded || !this.options.syntheticUsers || tid !== this.directory.tenant.id || typeof oid !== 'string' || !GUID.test(oid)) return seeded;
    let user = this.synthetic.get(oid);
    if (!user) {
      user = syntheticUser(this.directory.tenant, oid);
      this.synthetic.set(oid, user);
    }
    return user;
  }

  nameOf(user: DirectoryUser): UserName | undefined {
    const entry = Object.entries(this.directory.named).find(([, u]) => u === user);
    return entry?.[0] as UserName | undefined;
  }

  flagsOf(user: DirectoryUser): UserFlags | undefined {
    const name = this.nameOf(user);
    if (name) return this.flags.get(name);
    return this.synthetic.get(user.id) === user
      ? { consented: true, consentedScopes: [...DEFAULT_CONSENT], mfaRequired: false, caClaims: null }
      : undefined;
  }

  setUser(name: UserName, flags: Partial<UserFlags>): void {
    const current = this.flags.get(name);
    if (!current) throw new Error(`emulator: unknown user '${String(name)}'`);
    this.flags.set(name, { ...current, ...flags });
  }

  recordRequest(entry: RequestLogEntry): void {
    this.log.push(entry);
    if (this.log.length > LOG_LIMIT) this.log.splice(0, this.log.length - LOG_LIMIT);
  }

  requests(): RequestLogEntry[] {
    return this.log.map((entry) => ({ ...entry }));
  }

  resetCounters(): void {
    for (const key of Object.keys(this.counters) as (keyof Counters)[]) this.counters[key] = 0;
  }

  reset(): void {
    this.resetCounters();
    this.faults.clear();
    this.keys.reset();
    this.resetFlags();
    this.appTokenLifetimeSeconds = 3599;
    this.log = [];
  }

  private resetFlags(): void {
    for (const name of Object.keys(this.directory.named) as UserName[]) {
      this.flags.set(name, { consented: true, consentedScopes: defaultConsent(name), mfaRequired: false, caClaims: null });
    }
  }
}

function defaultConsent(name: UserName): string[] {
  // carol's tenant only consented to the basic profile scope.
  return name === 'carol' ? ['User.Read'] : [...DEFAULT_CONSENT];
}
