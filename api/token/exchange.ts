import {
  AuthError,
  ConfidentialClientApplication,
  InteractionRequiredAuthError,
  LogLevel,
  type AuthenticationResult,
  type Configuration,
} from '@azure/msal-node';
import type { Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { Histogram, type Registry } from 'prom-client';
import type { ClientCredential } from '../config/load-config.js';
import {
  ApiError,
  ClaimsChallengeError,
  InteractionRequiredError,
  InvalidTokenError,
  ServerConfigurationError,
  ServiceUnavailableError,
} from '../errors.js';
import { createCredentialSource, refusedAsBadCredential, type ClientAuth, type CredentialSource } from './credential-source.js';
import type { ExchangeOutcomes } from './exchange-outcomes.js';
import { parseRetryAfter } from './retry-after.js';
import { createLocalThrottleWindows, throttleKey, type ThrottleWindows } from './throttle-windows.js';
import { createTokenEndpointClient, type TokenEndpointRecord } from './token-endpoint-client.js';

interface ExchangeRequest {
  /** The caller's validated access token. */
  assertion: string;
  scopes: string[];
  /** The token's `tid`: the exchange goes to that tenant's authority. */
  tenantId: string;
  /** A claims challenge (JSON) from Conditional Access or CAE, to satisfy in this exchange. */
  claims?: string;
  correlationId?: string;
}

export interface ExchangedToken {
  accessToken: string;
  /** Epoch ms. */
  expiresOn: number;
  /** Epoch ms; set when Entra sent `refresh_in`. */
  refreshOn?: number;
}

/** The one seam between the service and msal-node: an OBO exchange, errors already mapped. */
export type Exchange = (request: ExchangeRequest) => Promise<ExchangedToken>;

/** The API's own app token (client credentials) for `scopes` (each ending in `/.default`), errors already mapped. */
export type ClientCredentialsGrant = (scopes: string[]) => Promise<ExchangedToken>;

/** What both grants need: where the token endpoint is, and how to authenticate to it. */
interface TokenEndpointOptions {
  authorityHost: string;
  clientId: string;
  /** The configured credential, or the app's one credential source (shared by every grant). */
  credential: ClientCredential | CredentialSource;
  timeoutMs: number;
  dispatcher: Dispatcher;
  logger: Logger;
  /** Entra's Retry-After windows (default: this instance's own). */
  throttle?: ThrottleWindows;
  now?: () => number;
}

export interface ExchangeOptions extends TokenEndpointOptions {
  /** Where `obo_exchange_duration_seconds` goes (the app's registry). None: not measured. */
  registry?: Registry;
  /** Counts each exchange by what Entra answered (`obo_exchanges_total`). */
  outcomes?: ExchangeOutcomes;
}

export interface ClientCredentialsOptions extends TokenEndpointOptions {
  /** The tenant app tokens are issued in: the API's home tenant. */
  tenantId: string;
  /** Where `app_token_request_duration_seconds` goes. None: not measured. */
  registry?: Registry;
}

/** An Entra `Retry-After` longer than this is capped: one bad header must not stop exchanges for hours. */
const MAX_BACKOFF_SECONDS = 300;
/** `Retry-After` we send when Entra failed without giving one. */
const DEFAULT_RETRY_AFTER_SECONDS = 5;
/** Entra error codes that mean our own registration or request is wrong, not the caller's. */
const MISCONFIGURATION = new Set(['invalid_client', 'invalid_scope', 'unauthorized_client', 'invalid_request', 'unsupported_grant_type']);

/**
 * OBO through msal-node, used for the exchange only (our cache sits in front of it).
 * A client per exchange: msal-node's in-memory cache is a linear scan that grows with every
 * user, and its throttling state is shared by all users of a client. Instead this module keeps
 * its own backoff, per tenant and scope set, lasting exactly as long as Entra's `Retry-After`.
 */
export function createExchange(options: ExchangeOptions): Exchange {
  const now = options.now ?? Date.now;
  const throttle = options.throttle ?? createLocalThrottleWindows(now);
  const endpoint = tokenEndpoint(options);
  const duration = options.registry
    ? requestDuration(
        options.registry,
        'obo_exchange_duration_seconds',
        'Duration of OBO exchanges with Microsoft Entra ID, by result (ok or the error code answered)',
      )
    : undefined;

  return async function exchange(request) {
    const backoffKey = throttleKey(request.tenantId, request.scopes);
    const waitMs = await throttle.remainingMs(backoffKey);
    if (waitMs > 0) throw new ServiceUnavailableError('Microsoft Entra ID asked us to slow down; try again later.', waitMs / 1000);

    const authority = `${options.authorityHost}/${request.tenantId}`;
    const stopTimer = duration?.startTimer();
    const { result, error, record } = await endpoint.call(
      authority,
      (client) =>
        client.acquireTokenOnBehalfOf({
          oboAssertion: request.assertion,
          scopes: request.scopes,
          skipCache: true,
          ...(request.claims ? { claims: request.claims } : {}),
          ...(request.correlationId ? { correlationId: request.correlationId } : {}),
        }),
      options.outcomes,
    );
    if (result) {
      stopTimer?.({ result: 'ok' });
      return token(result);
    }
    const mapped = mapExchangeError(error, record, request, authority, now);
    stopTimer?.({ result: mapped.code });
    if (mapped instanceof ServiceUnavailableError && record.retryAfter !== undefined) {
      await throttle.open(backoffKey, mapped.retryAfterSeconds * 1000);
    }
    logFailure(options.logger, 'token exchange failed', mapped, error, record);
    throw mapped;
  };
}

/**
 * The client-credentials grant through msal-node (`acquireTokenByClientCredential`): the API's
 * own app token, in its home tenant, with the same credential handling, timeout and Retry-After
 * windows as the OBO exchange (keyed apart from it). Nothing is cached here (see app-tokens.ts).
 */
export function createClientCredentialsGrant(options: ClientCredentialsOptions): ClientCredentialsGrant {
  const now = options.now ?? Date.now;
  const throttle = options.throttle ?? createLocalThrottleWindows(now);
  const endpoint = tokenEndpoint(options);
  const authority = `${options.authorityHost}/${options.tenantId}`;
  const duration = options.registry
    ? requestDuration(
        options.registry,
        'app_token_request_duration_seconds',
        'Duration of client-credentials (app token) requests to Microsoft Entra ID, by result',
      )
    : undefined;

  return async function grant(scopes) {
    const backoffKey = `app ${throttleKey(options.tenantId, scopes)}`;
    const waitMs = await throttle.remainingMs(backoffKey);
    if (waitMs > 0) throw new ServiceUnavailableError('Microsoft Entra ID asked us to slow down; try again later.', waitMs / 1000);
    const stopTimer = duration?.startTimer();
    const { result, error, record } = await endpoint.call(authority, (client) => client.acquireTokenByClientCredential({ scopes, skipCache: true }));
    if (result) {
      stopTimer?.({ result: 'ok' });
      return token(result);
    }
    const mapped = error instanceof ApiError ? error : (unavailable(error, record, now) ?? misconfigured(error, record));
    stopTimer?.({ result: mapped.code });
    if (mapped instanceof ServiceUnavailableError && record.retryAfter !== undefined) {
      await throttle.open(backoffKey, mapped.retryAfterSeconds * 1000);
    }
    logFailure(options.logger, 'app token request failed', mapped, error, record);
    throw mapped;
  };
}

type TokenCall = (client: ConfidentialClientApplication) => Promise<AuthenticationResult | null>;
type CallResult =
  | { result: AuthenticationResult; error?: undefined; record: TokenEndpointRecord }
  | { result?: undefined; error: unknown; record: TokenEndpointRecord };

/**
 * One request to the token endpoint, with the credential source's current credential; when
 * Entra refuses that credential as bad and another is configured, once more with the other.
 */
function tokenEndpoint(options: TokenEndpointOptions): { call(authority: string, run: TokenCall, outcomes?: ExchangeOutcomes): Promise<CallResult> } {
  const host = new URL(options.authorityHost).host;
  const credentials =
    'attempts' in options.credential
      ? options.credential
      : createCredentialSource(options.credential, { logger: options.logger, ...(options.now ? { now: options.now } : {}) });

  function client(authority: string, auth: ClientAuth, record: TokenEndpointRecord): ConfidentialClientApplication {
    const configuration: Configuration = {
      auth: {
        clientId: options.clientId,
        authority,
        knownAuthorities: [host],
        // Given up front, so msal makes no discovery or metadata requests: only the token POST.
        authorityMetadata: JSON.stringify(authorityMetadata(authority)),
        // cp1: we handle claims challenges, so Graph may send CAE challenges instead of failing later.
        clientCapabilities: ['cp1'],
        ...auth,
      },
      system: {
        networkClient: createTokenEndpointClient(options.dispatcher, options.timeoutMs, record),
        loggerOptions: {
          piiLoggingEnabled: false,
          logLevel: LogLevel.Warning,
          loggerCallback: (_level, message) => options.logger.debug({ msal: message }, 'msal-node'),
        },
      },
    };
    return new ConfidentialClientApplication(configuration);
  }

  return {
    async call(authority, run, outcomes) {
      let attempts;
      try {
        attempts = await credentials.attempts();
      } catch {
        // A federated token file that cannot be read: nothing to send.
        return { error: new ServerConfigurationError({ code: 'credential_unreadable', misconfiguration: true }), record: {} };
      }
      if (attempts.length === 0) {
        return {
          error: new ServerConfigurationError({
            code: 'invalid_client',
            reason: 'every configured credential was refused lately',
            misconfiguration: true,
          }),
          record: {},
        };
      }
      let last: CallResult = { error: new Error('no attempt'), record: {} };
      for (const attempt of attempts) {
        const record: TokenEndpointRecord = {};
        try {
          const result = await run(client(authority, attempt.auth, record));
          if (!result?.accessToken || !result.expiresOn) throw new Error('msal-node returned no access token');
          credentials.accepted(attempt);
          outcomes?.('ok');
          return { result, record };
        } catch (error) {
          outcomes?.(record);
          last = { error, record };
          const aadsts = refusedAsBadCredential(record);
          if (aadsts === undefined) return last;
          credentials.refused(attempt, aadsts);
        }
      }
      return last;
    },
  };
}

function token(result: AuthenticationResult): ExchangedToken {
  return {
    accessToken: result.accessToken,
    expiresOn: (result.expiresOn ?? new Date(0)).getTime(),
    ...(result.refreshOn ? { refreshOn: result.refreshOn.getTime() } : {}),
  };
}

function logFailure(logger: Logger, message: string, mapped: ApiError, error: unknown, record: TokenEndpointRecord): void {
  const log = { entra: record.entraError, status: record.status, failure: record.failure, code: errorCode(error) };
  if (mapped instanceof ServerConfigurationError) logger.error({ ...log, detail: mapped.detail }, `${message}: check the app registration`);
  else logger.warn(log, message);
}

/**
 * Time of each call to the token endpoint (backoff refusals are not calls), by result: `ok` or
 * the stable code of the error the caller gets.
 */
function requestDuration(registry: Registry, name: string, help: string): Histogram<'result'> {
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  return new Histogram({
    name,
    help,
    labelNames: ['result'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
}

/** Entra's standard endpoint layout for one tenant. */
function authorityMetadata(authority: string): Record<string, string> {
  return {
    issuer: `${authority}/v2.0`,
    authorization_endpoint: `${authority}/oauth2/v2.0/authorize`,
    token_endpoint: `${authority}/oauth2/v2.0/token`,
    end_session_endpoint: `${authority}/oauth2/v2.0/logout`,
    jwks_uri: `${authority}/discovery/v2.0/keys`,
  };
}

function errorCode(error: unknown): string | undefined {
  return error instanceof AuthError ? error.errorCode : undefined;
}

/** Entra unreachable, throttling or failing: 503 with a Retry-After (capped). */
function unavailable(error: unknown, record: TokenEndpointRecord, now: () => number): ServiceUnavailableError | undefined {
  const status = record.status ?? 0;
  if (record.failure || status === 429 || status >= 500 || record.entraError?.error === 'temporarily_unavailable') {
    const retryAfter = parseRetryAfter(record.retryAfter, now()) ?? DEFAULT_RETRY_AFTER_SECONDS;
    return new ServiceUnavailableError(
      'Microsoft Entra ID is unavailable or throttling; try again later.',
      Math.min(retryAfter, MAX_BACKOFF_SECONDS),
    );
  }
  if (error instanceof AuthError && error.errorCode === 'network_error') {
    return new ServiceUnavailableError('Microsoft Entra ID is unreachable; try again later.', DEFAULT_RETRY_AFTER_SECONDS);
  }
  return undefined;
}

function misconfigured(error: unknown, record: TokenEndpointRecord): ServerConfigurationError {
  const code = record.entraError?.error ?? errorCode(error) ?? '';
  const suberror = record.entraError?.suberror ?? (error instanceof AuthError ? error.subError : '');
  return new ServerConfigurationError({ code, suberror, status: record.status ?? 0, misconfiguration: MISCONFIGURATION.has(code) });
}

/** Every exchange failure, as something the caller can act on (docs/bad-input-checklist.md #50-#54). */
function mapExchangeError(error: unknown, record: TokenEndpointRecord, request: ExchangeRequest, authority: string, now: () => number): ApiError {
  if (error instanceof ApiError) return error;
  const down = unavailable(error, record, now);
  if (down) return down;
  const code = record.entraError?.error ?? errorCode(error) ?? '';
  const suberror = record.entraError?.suberror ?? (error instanceof AuthError ? error.subError : '');
  if (error instanceof InteractionRequiredAuthError) {
    if (error.claims) return new ClaimsChallengeError(error.claims, `${authority}/oauth2/v2.0/authorize`);
    if (suberror === 'consent_required' || code === 'consent_required' || record.entraError?.error_codes?.includes(65001)) {
      return new InteractionRequiredError('consent_required', request.scopes, request.correlationId);
    }
    if (suberror === 'bad_token') return new InvalidTokenError('Microsoft Entra ID rejected the access token.');
    return new InteractionRequiredError(suberror || code || 'interaction_required', request.scopes, request.correlationId);
  }
  if (code === 'invalid_grant') return new InvalidTokenError('Microsoft Entra ID rejected the access token.');
  return misconfigured(error, record);
}
