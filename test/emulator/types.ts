// Public types of the Entra ID + Microsoft Graph emulator.

export type UserName = 'alice' | 'bob' | 'carol';

export interface EmulatorOptions {
  entraPort?: number; // default 0 = free port
  graphPort?: number; // default 0
  certDir?: string; // default <repo>/.emulator
  /** v2 issuer form in metadata + minted tokens. 'microsoft' = https://login.microsoftonline.com/{tid}/v2.0 */
  issuerStyle?: 'microsoft' | 'origin';
  /** Lifetime of the Graph tokens the /token endpoint issues (expires_in). Default 3599. */
  accessTokenLifetimeSeconds?: number;
  /**
   * Any GUID `oid` in the home tenant is a user who consented like alice (no MFA, no groups),
   * so load tests can exchange for many distinct users: `mint({ extraClaims: { oid } })`. Default false.
   */
  syntheticUsers?: boolean;
}

export interface EmulatorUser {
  /** 'alice' | 'bob' | 'carol' */
  key: UserName;
  oid: string;
  tid: string;
  upn: string;
  /** Display name, as in the token's `name` claim and Graph's `displayName`. */
  name: string;
  givenName: string;
  surname: string;
}

interface TenantInfo {
  id: string;
  domain: string;
}

interface CredentialControl {
  /** Registers a new client secret on the API's registration and returns it. */
  addSecret(): string;
  /** Deletes a client secret: Entra then answers AADSTS7000215 for it. */
  removeSecret(value: string): void;
  /** Registers a certificate (PEM) on the API's registration. */
  addCertificate(certificatePem: string): void;
  /** Deletes a certificate by its SHA-256 thumbprint (hex). */
  removeCertificate(thumbprintSha256Hex: string): void;
}

export interface Counters {
  /** Every request to a token endpoint, whatever its grant. */
  token: number;
  /** App tokens issued through the client-credentials grant. */
  clientCredentials: number;
  jwks: number;
  openidConfiguration: number;
  graph: number;
  instanceDiscovery: number;
}

export interface RequestLogEntry {
  time: string;
  server: 'entra' | 'graph';
  method: string;
  path: string;
  /** Names of query parameters (values are never logged). */
  query: string[];
  status: number;
  /** Names of form parameters (values are never logged). */
  formParams: string[];
  /** Names of the request headers, lower case (values are never logged). */
  headers?: string[];
  scope?: string;
  grantType?: string;
  clientRequestId?: string;
  requestId: string;
  /** Entra `error` (+ AADSTS code) or Graph error `code` of a failed request. */
  error?: string;
  /** Which injected fault shaped this response, if any. */
  fault?: string;
  durationMs: number;
}

/** `'current'`, `'previous'`, `'unpublished'`, `'msa'` (published, bound to the MSA tenant issuer) or a kid. */
export type KeyChoice = 'current' | 'previous' | 'unpublished' | 'msa' | (string & {});

export interface MintOptions {
  user?: UserName;
  version?: 1 | 2;
  aud?: unknown;
  iss?: unknown;
  tid?: unknown;
  /** Default 'access_as_user'; null = omit. */
  scp?: string | null;
  roles?: string[];
  idtyp?: string;
  /** Numbers, null to omit, or any raw value ("abc", true, 1e309 ...). */
  exp?: unknown;
  iat?: unknown;
  nbf?: unknown;
  lifetimeSeconds?: number;
  /** Set last; a value of `undefined` deletes the claim, `null` is kept as JSON null. */
  extraClaims?: Record<string, unknown>;
  /** Merged into the JOSE header; a value of null omits that member (e.g. `kid: null`). */
  header?: Record<string, unknown>;
  key?: KeyChoice;
  xms_cc?: string[];
  /** An app-only token: no user claims, `roles`, `idtyp: "app"`, no `scp`. */
  appOnly?: boolean;
}

export interface RawTokenParts {
  /** Objects are JSON-encoded; strings are used verbatim (then base64url-encoded). */
  header: object | string;
  payload: object | string;
  /** Default 'rs256'. 'alg' signs with whatever the header's `alg` says. */
  sign?: 'rs256' | 'none' | 'hs256-with-public-key' | 'invalid' | 'alg';
  key?: KeyChoice;
  /** Use this third segment verbatim instead of a computed signature. */
  signature?: string;
}

export interface IdTokenOptions {
  /** Default: the SPA client id (the app the user signed in to). */
  aud?: string;
  version?: 1 | 2;
  nonce?: string;
}

export interface GraphTokenOptions {
  user?: UserName;
  /** Space-separated Graph scopes, default 'User.Read'. */
  scp?: string;
  lifetimeSeconds?: number;
  xms_cc?: string[];
}

export interface TokenFault {
  /** The status to answer with; a 2xx (or none) with `delayMs` only slows the real answer down. */
  status?: number;
  /** OAuth `error`; default temporarily_unavailable for 429/5xx, invalid_request otherwise. */
  error?: string;
  errorCode?: number;
  description?: string;
  suberror?: string;
  claims?: string;
  retryAfter?: number | string;
  body?: 'non-json';
  delayMs?: number;
  times?: number | 'always';
}

export interface JwksFault {
  status?: number;
  delayMs?: number;
  body?: 'non-json' | 'empty';
  times?: number | 'always';
}

export interface GraphFault {
  /** Prefix of the path, with or without the version segment ('/v1.0/me', '/me/messages'). */
  path?: string;
  status?: number;
  code?: string;
  message?: string;
  retryAfter?: number | string;
  /** JSON claims string (or its base64); makes a 401 insufficient_claims CAE challenge. */
  caeClaims?: string;
  /** Real Graph sends CAE challenges only to tokens of cp1 clients (msal clientCapabilities ['cp1']). Default true. */
  requireCp1?: boolean;
  body?: 'non-json';
  /** Replaces the `@odata.nextLink` of the matched (successful) page, e.g. with an off-host URL. */
  nextLink?: string;
  /** Extra response headers (Set-Cookie, Location, …), on the fault's answer or the normal one. */
  headers?: Record<string, string>;
  delayMs?: number;
  times?: number | 'always';
}

export interface FaultControl {
  injectToken(fault: TokenFault): void;
  injectJwks(fault: JwksFault): void;
  injectOpenidConfiguration(fault: JwksFault): void;
  /** While down, every JWKS request fails: 'status' answers 500, 'close' destroys the connection. */
  jwksDown(down: boolean, mode?: 'status' | 'close'): void;
  injectGraph(fault: GraphFault): void;
  pending(): { token: number; jwks: number; openidConfiguration: number; graph: number };
  clear(): void;
}

export interface KeyInfo {
  kid: string;
  x5t: string;
  published: boolean;
  current: boolean;
  /** The JWK `issuer` (template for shared keys). */
  issuer: string;
}

export interface KeyControl {
  readonly currentKid: string;
  readonly previousKid: string;
  readonly unpublishedKid: string;
  /** A published key whose JWK `issuer` is the concrete MSA tenant (like real Entra's common JWKS). */
  readonly msaKid: string;
  publishedKids(): string[];
  list(): KeyInfo[];
  /** Generates a new key, publishes it and signs with it from now on. The old current key stays published as previous. */
  rotate(): Promise<string>;
  /** Removes a key from the JWKS; the token endpoint stops accepting assertions signed with it. */
  retire(kid: string): void;
  /** Adds a known key (e.g. the unpublished one) to the JWKS. */
  publish(kid: string): void;
  publicKeyPem(kid: KeyChoice): string;
}

export interface UserFlags {
  consented: boolean;
  /** Overrides the Graph scopes the user has consented to for the API. */
  consentedScopes: string[];
  mfaRequired: boolean;
  caClaims: string | null;
}

export interface Emulator {
  authorityHost: string;
  graphBaseUrl: string;
  caPath: string;
  tenant: TenantInfo;
  otherTenant: TenantInfo;
  api: {
    clientId: string;
    clientSecret: string;
    /** A secret registered on the app that has expired (AADSTS7000222). */
    expiredClientSecret: string;
    appIdUri: string;
    certificatePemPath: string;
    certificateThumbprint: string; // SHA-1 hex
    certificateThumbprintSha256: string; // SHA-256 hex
    federatedTokenFile: string;
  };
  spa: { clientId: string };
  /** Another registered API (a valid but foreign audience). */
  otherApi: { clientId: string; appIdUri: string };
  users: Record<UserName, EmulatorUser>;
  mint(options?: MintOptions): string;
  mintRaw(parts: RawTokenParts): string;
  mintIdToken(user?: UserName, options?: IdTokenOptions): string;
  mintGraphTokenReplay(user?: UserName): string;
  /** A Graph token the Graph side accepts, without going through /token. */
  mintGraphToken(options?: GraphTokenOptions): string;
  counters: Counters;
  resetCounters(): void;
  requests(): RequestLogEntry[];
  faults: FaultControl;
  keys: KeyControl;
  setUser(name: UserName, flags: Partial<UserFlags>): void;
  /** The API registration's credentials, changed as a rotation in the portal would. */
  credentials: CredentialControl;
  /** Lifetime (expires_in) of the app tokens the client-credentials grant issues; default 3599. */
  setAppTokenLifetime(seconds: number): void;
  reset(): void;
  close(): Promise<void>;
}
