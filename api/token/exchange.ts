import { readFile } from 'node:fs/promises';
import {
  AuthError,
  ConfidentialClientApplication,
  InteractionRequiredAuthError,
  LogLevel,
  type Configuration,
  type NodeAuthOptions,
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
import type { ExchangeOutcomes } from './exchange-outcomes.js';
import { parseRetryAfter } from './retry-after.js';
import { createTokenEndpointClient, type TokenEndpointRecord } from './token-endpoint-client.js';

export interface ExchangeRequest {
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

export interface ExchangeOptions {
  authorityHost: string;
  clientId: string;
  credential: ClientCredential;
  timeoutMs: number;
  dispatcher: Dispatcher;
  logger: Logger;
  /** Where `obo_exchange_duration_seconds` goes (the app's registry). None: not measured. */
  registry?: Registry;
  /** Counts each exchange by what Entra answered (`obo_exchanges_total`). */
  outcomes?: ExchangeOutcomes;
  now?: () => number;
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
  const host = new URL(options.authorityHost).host;
  const blockedUntil = new Map<string, number>();
  const credential = credentialOptions(options.credential);
  const duration = options.registry ? exchangeDuration(options.registry) : undefined;

  return async function exchange(request) {
    const backoffKey = `${request.tenantId} ${request.scopes.join(' ')}`;
    const waitMs = (blockedUntil.get(backoffKey) ?? 0) - now();
    if (waitMs > 0) throw new ServiceUnavailableError('Microsoft Entra ID asked us to slow down; try again later.', waitMs / 1000);
    blockedUntil.delete(backoffKey);

    const authority = `${options.authorityHost}/${request.tenantId}`;
    const record: TokenEndpointRecord = {};
    const stopTimer = duration?.startTimer();
    const configuration: Configuration = {
      auth: {
        clientId: options.clientId,
        authority,
        knownAuthorities: [host],
        // Given up front, so msal makes no discovery or metadata requests: only the token POST.
        authorityMetadata: JSON.stringify(authorityMetadata(authority)),
        // cp1: we handle claims challenges, so Graph may send CAE challenges instead of failing later.
        clientCapabilities: ['cp1'],
        ...credential,
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
    try {
      const result = await new ConfidentialClientApplication(configuration).acquireTokenOnBehalfOf({
        oboAssertion: request.assertion,
        scopes: request.scopes,
        skipCache: true,
        ...(request.claims ? { claims: request.claims } : {}),
        ...(request.correlationId ? { correlationId: request.correlationId } : {}),
      });
      if (!result?.accessToken || !result.expiresOn) throw new Error('msal-node returned no access token');
      stopTimer?.({ result: 'ok' });
      options.outcomes?.('ok');
      return {
        accessToken: result.accessToken,
        expiresOn: result.expiresOn.getTime(),
        ...(result.refreshOn ? { refreshOn: result.refreshOn.getTime() } : {}),
      };
    } catch (error) {
      const mapped = mapExchangeError(error, record, request, authority, now);
      stopTimer?.({ result: mapped.code });
      options.outcomes?.(record);
      if (mapped instanceof ServiceUnavailableError && record.retryAfter !== undefined) {
        blockedUntil.set(backoffKey, now() + mapped.retryAfterSeconds * 1000);
      }
      const log = { entra: record.entraError, status: record.status, failure: record.failure, code: errorCode(error) };
      if (mapped instanceof ServerConfigurationError) options.logger.error(log, 'token exchange failed: check the app registration');
      else options.logger.warn(log, 'token exchange failed');
      throw mapped;
    }
  };
}

/**
 * Time of each call to the token endpoint (backoff refusals are not calls), by result: `ok` or
 * the stable code of the error the caller gets. Shared when two apps are built on one registry.
 */
function exchangeDuration(registry: Registry): Histogram<'result'> {
  const name = 'obo_exchange_duration_seconds';
  const existing = registry.getSingleMetric(name);
  if (existing instanceof Histogram) return existing as Histogram<'result'>;
  return new Histogram({
    name,
    help: 'Duration of OBO exchanges with Microsoft Entra ID, by result (ok or the error code answered)',
    labelNames: ['result'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
}

function credentialOptions(credential: ClientCredential): Pick<NodeAuthOptions, 'clientSecret' | 'clientCertificate' | 'clientAssertion'> {
  switch (credential.kind) {
    case 'secret':
      return { clientSecret: credential.secret };
    case 'certificate':
      return {
        clientCertificate: {
          thumbprintSha256: credential.thumbprintSha256,
          privateKey: credential.privateKeyPem,
          x5c: credential.certificatePem,
        },
      };
    case 'federated':
      // Read on every exchange: workload identity rotates the file underneath us.
      return { clientAssertion: async () => (await readFile(credential.tokenFile, 'utf8')).trim() };
  }
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

/** Every exchange failure, as something the caller can act on (bad-inputs.md 50-54). */
function mapExchangeError(
  error: unknown,
  record: TokenEndpointRecord,
  request: ExchangeRequest,
  authority: string,
  now: () => number,
): ApiError {
  if (error instanceof ApiError) return error;
  const status = record.status ?? 0;
  if (record.failure || status === 429 || status >= 500 || record.entraError?.error === 'temporarily_unavailable') {
    const retryAfter = parseRetryAfter(record.retryAfter, now()) ?? DEFAULT_RETRY_AFTER_SECONDS;
    return new ServiceUnavailableError(
      'Microsoft Entra ID is unavailable or throttling; try again later.',
      Math.min(retryAfter, MAX_BACKOFF_SECONDS),
    );
  }
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
  if (error instanceof AuthError && error.errorCode === 'network_error') {
    return new ServiceUnavailableError('Microsoft Entra ID is unreachable; try again later.', DEFAULT_RETRY_AFTER_SECONDS);
  }
  return new ServerConfigurationError({ code, suberror, status, misconfiguration: MISCONFIGURATION.has(code) });
}
