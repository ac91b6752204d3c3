import { X509Certificate, createPrivateKey } from 'node:crypto';
import { accessSync, constants, readFileSync } from 'node:fs';
import type { EnvReader } from './env-reader.js';
import { shown } from './shown.js';

/** A certificate credential as msal-node signs with it; `path` is re-read when the file changes. */
export interface CertificateCredential {
  kind: 'certificate';
  path: string;
  /** For an encrypted private key (AZURE_CLIENT_CERTIFICATE_PASSWORD, or its _NEXT_ twin). */
  password?: string;
  privateKeyPem: string;
  certificatePem: string;
  thumbprintSha256: string;
}

export type SingleCredential = { kind: 'secret'; secret: string } | CertificateCredential | { kind: 'federated'; tokenFile: string };

/**
 * The API's own credential and, during a rotation, the other one (`next`): an exchange that
 * Entra refuses as a bad credential is retried once with the other (api/token/credential-source.ts).
 */
export type ClientCredential = SingleCredential & { next?: SingleCredential };

/**
 * The API's own credential: exactly one of a client secret, a certificate file, or a federated
 * token file; and at most one of AZURE_CLIENT_SECRET_NEXT or AZURE_CLIENT_CERTIFICATE_NEXT_PATH.
 * No problem message ever quotes the secret or the certificate's password.
 */
export function readCredential(read: EnvReader): ClientCredential | undefined {
  const secret = read.optional('AZURE_CLIENT_SECRET');
  const certificatePath = read.optional('AZURE_CLIENT_CERTIFICATE_PATH');
  const tokenFile = read.optional('AZURE_FEDERATED_TOKEN_FILE');
  const given = [secret, certificatePath, tokenFile].filter((v) => v !== undefined).length;
  const names = 'AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE';
  const next = readNext(read);
  if (given !== 1) {
    read.problem('AZURE_CLIENT_SECRET', `exactly one credential is required: set one of ${names} (${given} set)`);
    return undefined;
  }
  const primary = readPrimary(read, secret, certificatePath, tokenFile);
  if (!primary) return undefined;
  if (next && sameCredential(primary, next)) {
    const name = next.kind === 'secret' ? 'AZURE_CLIENT_SECRET_NEXT' : 'AZURE_CLIENT_CERTIFICATE_NEXT_PATH';
    read.problem(name, 'the next credential is the current one: set it to the credential you are rotating to');
  }
  return next ? { ...primary, next } : primary;
}

function readPrimary(read: EnvReader, secret?: string, certificatePath?: string, tokenFile?: string): SingleCredential | undefined {
  if (secret !== undefined) return { kind: 'secret', secret };
  if (tokenFile !== undefined) {
    try {
      accessSync(tokenFile, constants.R_OK);
    } catch {
      read.problem('AZURE_FEDERATED_TOKEN_FILE', `cannot read the file "${shown(tokenFile)}"`);
    }
    return { kind: 'federated', tokenFile };
  }
  return readCertificate(read, 'AZURE_CLIENT_CERTIFICATE_PATH', certificatePath ?? '', read.optional('AZURE_CLIENT_CERTIFICATE_PASSWORD'));
}

/** The credential being rotated to, if any (a federated token file rotates itself). */
function readNext(read: EnvReader): SingleCredential | undefined {
  const secret = read.optional('AZURE_CLIENT_SECRET_NEXT');
  const certificatePath = read.optional('AZURE_CLIENT_CERTIFICATE_NEXT_PATH');
  if (secret !== undefined && certificatePath !== undefined) {
    read.problem('AZURE_CLIENT_SECRET_NEXT', 'set at most one of AZURE_CLIENT_SECRET_NEXT and AZURE_CLIENT_CERTIFICATE_NEXT_PATH');
    return undefined;
  }
  if (secret !== undefined) return { kind: 'secret', secret };
  if (certificatePath === undefined) return undefined;
  const password = read.optional('AZURE_CLIENT_CERTIFICATE_NEXT_PASSWORD') ?? read.optional('AZURE_CLIENT_CERTIFICATE_PASSWORD');
  return readCertificate(read, 'AZURE_CLIENT_CERTIFICATE_NEXT_PATH', certificatePath, password);
}

function sameCredential(a: SingleCredential, b: SingleCredential): boolean {
  if (a.kind === 'secret' && b.kind === 'secret') return a.secret === b.secret;
  if (a.kind === 'certificate' && b.kind === 'certificate') return a.thumbprintSha256 === b.thumbprintSha256;
  return false;
}

function readCertificate(read: EnvReader, name: string, path: string, password: string | undefined): CertificateCredential | undefined {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    read.problem(name, `cannot read the file "${shown(path)}"`);
    return undefined;
  }
  const parsed = parseCertificatePem(pem, password);
  if (typeof parsed === 'string') {
    read.problem(name, parsed);
    return undefined;
  }
  return { kind: 'certificate', path, ...(password !== undefined ? { password } : {}), ...parsed };
}

/**
 * A PEM holding the private key and the certificate, as msal-node wants them, or the problem
 * with it (never quoting the file). Also used to reload a rotated file.
 */
export function parseCertificatePem(
  pem: string,
  password: string | undefined,
): Pick<CertificateCredential, 'privateKeyPem' | 'certificatePem' | 'thumbprintSha256'> | string {
  const certificatePem = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0];
  const keyPem = pem.match(/-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/)?.[0];
  if (!certificatePem || !keyPem) return 'expected a PEM file holding both the private key and the certificate';
  try {
    const privateKey = createPrivateKey(password === undefined ? keyPem : { key: keyPem, passphrase: password });
    const certificate = new X509Certificate(certificatePem);
    if (!certificate.checkPrivateKey(privateKey)) return 'the private key does not belong to the certificate';
    return {
      // msal-node wants an unencrypted PKCS#8 PEM; with a SHA-256 thumbprint it signs PS256 + x5t#S256.
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      certificatePem,
      thumbprintSha256: certificate.fingerprint256.replaceAll(':', ''),
    };
  } catch {
    return 'the PEM file does not parse (or its password is wrong)';
  }
}
