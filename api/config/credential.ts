import { X509Certificate, createPrivateKey } from 'node:crypto';
import { accessSync, constants, readFileSync } from 'node:fs';
import type { EnvReader } from './env-reader.js';
import { shown } from './shown.js';

export type ClientCredential =
  | { kind: 'secret'; secret: string }
  | { kind: 'certificate'; privateKeyPem: string; certificatePem: string; thumbprintSha256: string }
  | { kind: 'federated'; tokenFile: string };

/**
 * The API's own credential: exactly one of a client secret, a certificate file, or a federated
 * token file. No problem message ever quotes the secret or the certificate's password.
 */
export function readCredential(read: EnvReader): ClientCredential | undefined {
  const secret = read.optional('AZURE_CLIENT_SECRET');
  const certificatePath = read.optional('AZURE_CLIENT_CERTIFICATE_PATH');
  const tokenFile = read.optional('AZURE_FEDERATED_TOKEN_FILE');
  const given = [secret, certificatePath, tokenFile].filter((v) => v !== undefined).length;
  const names = 'AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE';
  if (given !== 1) {
    read.problem('AZURE_CLIENT_SECRET', `exactly one credential is required: set one of ${names} (${given} set)`);
    return undefined;
  }
  if (secret !== undefined) return { kind: 'secret', secret };
  if (tokenFile !== undefined) {
    try {
      accessSync(tokenFile, constants.R_OK);
    } catch {
      read.problem('AZURE_FEDERATED_TOKEN_FILE', `cannot read the file "${shown(tokenFile)}"`);
    }
    return { kind: 'federated', tokenFile };
  }
  return readCertificate(read, certificatePath ?? '');
}

function readCertificate(read: EnvReader, path: string): ClientCredential | undefined {
  const name = 'AZURE_CLIENT_CERTIFICATE_PATH';
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    read.problem(name, `cannot read the file "${shown(path)}"`);
    return undefined;
  }
  const certificatePem = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0];
  const keyPem = pem.match(/-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/)?.[0];
  if (!certificatePem || !keyPem) {
    read.problem(name, 'expected a PEM file holding both the private key and the certificate');
    return undefined;
  }
  try {
    const password = read.optional('AZURE_CLIENT_CERTIFICATE_PASSWORD');
    const privateKey = createPrivateKey(password === undefined ? keyPem : { key: keyPem, passphrase: password });
    const certificate = new X509Certificate(certificatePem);
    if (!certificate.checkPrivateKey(privateKey)) {
      read.problem(name, 'the private key does not belong to the certificate');
      return undefined;
    }
    return {
      kind: 'certificate',
      // msal-node wants an unencrypted PKCS#8 PEM; with a SHA-256 thumbprint it signs PS256 + x5t#S256.
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      certificatePem,
      thumbprintSha256: certificate.fingerprint256.replaceAll(':', ''),
    };
  } catch {
    read.problem(name, 'the PEM file does not parse (or AZURE_CLIENT_CERTIFICATE_PASSWORD is wrong)');
    return undefined;
  }
}
