import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { NodeAuthOptions } from '@azure/msal-node';
import type { Logger } from 'pino';
import { parseCertificatePem, type CertificateCredential, type ClientCredential, type SingleCredential } from '../config/credential.js';
import type { TokenEndpointRecord } from './token-endpoint-client.js';

/** What msal-node is given to authenticate the API. */
export type ClientAuth = Pick<NodeAuthOptions, 'clientSecret' | 'clientCertificate' | 'clientAssertion'>;

/** Which configured credential: AZURE_CLIENT_* or its *_NEXT twin. */
type CredentialSlot = 'current' | 'next';

/** One credential to try on one request to the token endpoint. */
interface CredentialAttempt {
  slot: CredentialSlot;
  kind: SingleCredential['kind'];
  auth: ClientAuth;
  /** A hash of the credential's value: refusals are remembered by value, so a rotated file starts afresh. */
  id: string;
}

/**
 * The one place the token endpoint requests (OBO, client credentials, and Redis's app token)
 * get the API's credential from. It re-reads a rotated certificate file, reads a federated token
 * file on every request, and during a rotation chooses between the two configured credentials.
 */
export interface CredentialSource {
  /**
   * The credentials to try, in order: the one in use, then the other (if configured and not
   * refused lately). Empty when every credential was refused within the retry interval.
   */
  attempts(): Promise<CredentialAttempt[]>;
  /** Entra accepted it: it is the one in use from now on. */
  accepted(attempt: CredentialAttempt): void;
  /** Entra refused it as a bad credential: not tried again for the retry interval. */
  refused(attempt: CredentialAttempt, aadsts: number | undefined): void;
}

export interface CredentialSourceOptions {
  logger: Logger;
  now?: () => number;
  /** How long a refused credential is left alone (default REFUSED_CREDENTIAL_RETRY_MS). */
  refusedRetryMs?: number;
}

/** A refused credential is tried again after this long: a secret added in the portal can take a while to replicate. */
export const REFUSED_CREDENTIAL_RETRY_MS = 60_000;

/** Entra's answers that mean "this credential is wrong", not "this request is wrong". */
const BAD_CREDENTIAL_CODES = new Set([
  7000215, // invalid client secret
  7000222, // expired client secret
  700027, // client assertion: invalid signature (certificate not registered)
  700024, // client assertion outside its validity window
]);

/** Whether Entra refused the request as a bad credential (so the other one is worth a try). */
export function refusedAsBadCredential(record: TokenEndpointRecord): number | undefined {
  if (record.entraError?.error !== 'invalid_client') return undefined;
  return record.entraError.error_codes?.find((code) => BAD_CREDENTIAL_CODES.has(code));
}

export function createCredentialSource(credential: ClientCredential, options: CredentialSourceOptions): CredentialSource {
  const now = options.now ?? Date.now;
  const retryMs = options.refusedRetryMs ?? REFUSED_CREDENTIAL_RETRY_MS;
  const log = options.logger;
  const { next, ...current } = credential;
  const slots = new Map<CredentialSlot, Slot>([['current', slotFor('current', current, log)]]);
  if (next) slots.set('next', slotFor('next', next, log));
  let inUse: CredentialSlot = 'current';
  const refusedUntil = new Map<string, number>();
  const isRefused = (id: string): boolean => (refusedUntil.get(id) ?? 0) > now();

  return {
    async attempts() {
      const order = inUse === 'current' ? ['current', 'next'] : ['next', 'current'];
      const all = await Promise.all(order.flatMap((name) => slots.get(name as CredentialSlot)?.attempt() ?? []));
      return all.filter((attempt) => !isRefused(attempt.id));
    },
    accepted(attempt) {
      refusedUntil.delete(attempt.id);
      if (attempt.slot === inUse) return;
      inUse = attempt.slot;
      log.warn({ credential: attempt.slot, kind: attempt.kind }, `credential: Entra accepted the ${attempt.slot} credential; using it from now on`);
    },
    refused(attempt, aadsts) {
      if (isRefused(attempt.id)) return;
      refusedUntil.set(attempt.id, now() + retryMs);
      log.error(
        { credential: attempt.slot, kind: attempt.kind, aadsts, retryInSeconds: Math.round(retryMs / 1000) },
        `credential: Entra refused the ${attempt.slot} credential; not trying it again for a while`,
      );
    },
  };
}

interface Slot {
  attempt(): Promise<CredentialAttempt>;
}

function slotFor(slot: CredentialSlot, credential: SingleCredential, log: Logger): Slot {
  switch (credential.kind) {
    case 'secret': {
      const attempt: CredentialAttempt = { slot, kind: 'secret', auth: { clientSecret: credential.secret }, id: hash(credential.secret) };
      return { attempt: () => Promise.resolve(attempt) };
    }
    case 'federated':
      return {
        // Read on every request: workload identity rewrites the file underneath us.
        async attempt() {
          const assertion = (await readFile(credential.tokenFile, 'utf8')).trim();
          return { slot, kind: 'federated', auth: { clientAssertion: assertion }, id: hash(assertion) };
        },
      };
    case 'certificate':
      return certificateSlot(slot, credential, log);
  }
}

/**
 * A certificate file that may be swapped underneath us: Kubernetes secret volumes and the Key
 * Vault CSI driver replace it through a symlink (`..data` → a new directory), others rewrite it
 * in place. Before each request one `stat` (following links) tells whether it changed; a changed
 * file that does not parse (half written, wrong key) leaves the previous certificate in use.
 */
function certificateSlot(slot: CredentialSlot, initial: CertificateCredential, log: Logger): Slot {
  let loaded = initial;
  let loadedVersion: string | undefined;
  let badVersion: string | undefined;
  let checking: Promise<void> | undefined;

  async function check(): Promise<void> {
    let version: string;
    try {
      const info = await stat(loaded.path, { bigint: true });
      version = `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`;
    } catch {
      if (badVersion !== 'missing')
        log.warn({ credential: slot }, 'credential: the certificate file cannot be read; keeping the previous certificate');
      badVersion = 'missing';
      return;
    }
    if (version === loadedVersion || version === badVersion) return;
    let parsed: ReturnType<typeof parseCertificatePem>;
    try {
      parsed = parseCertificatePem(await readFile(loaded.path, 'utf8'), loaded.password);
    } catch {
      parsed = 'the file cannot be read';
    }
    if (typeof parsed === 'string') {
      badVersion = version;
      log.warn({ credential: slot, problem: parsed }, 'credential: the certificate file changed but is not usable; keeping the previous certificate');
      return;
    }
    badVersion = undefined;
    loadedVersion = version;
    if (parsed.thumbprintSha256 === loaded.thumbprintSha256) return;
    loaded = { ...loaded, ...parsed };
    log.info({ credential: slot, thumbprintSha256: parsed.thumbprintSha256 }, 'credential: certificate file reloaded');
  }

  return {
    async attempt() {
      // Concurrent requests share one check.
      checking ??= check().finally(() => {
        checking = undefined;
      });
      await checking;
      const { privateKeyPem, certificatePem, thumbprintSha256 } = loaded;
      return {
        slot,
        kind: 'certificate',
        auth: { clientCertificate: { thumbprintSha256, privateKey: privateKeyPem, x5c: certificatePem } },
        id: thumbprintSha256,
      };
    },
  };
}

function hash(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}
