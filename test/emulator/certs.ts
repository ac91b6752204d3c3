// Local CA + TLS leaf for the emulator servers, the app credential certificate, and
// self-signed certificates for token-signing keys (JWKS x5c). Files live in certDir and are
// reused across runs; they are regenerated when missing, unreadable or close to expiry.
import { X509Certificate, createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from 'selfsigned';

export const defaultCertDir = fileURLToPath(new URL('../../.emulator', import.meta.url));

const DAY_MS = 86_400_000;
const RENEW_BEFORE_MS = 30 * DAY_MS;

export interface CertificatePaths {
  caPath: string;
  certPath: string;
  keyPath: string;
}

export interface AppCertificate {
  /** PEM file holding the private key followed by the certificate. */
  pemPath: string;
  privateKeyPem: string;
  certificatePem: string;
  thumbprintSha1Hex: string;
  thumbprintSha256Hex: string;
}

/** Ensures ca.pem, ca-key.pem, server.pem and server-key.pem exist and are usable. */
export async function ensureCertificates(dir: string = defaultCertDir): Promise<CertificatePaths> {
  const paths: CertificatePaths = {
    caPath: join(dir, 'ca.pem'),
    certPath: join(dir, 'server.pem'),
    keyPath: join(dir, 'server-key.pem'),
  };
  const caKeyPath = join(dir, 'ca-key.pem');
  await mkdir(dir, { recursive: true });
  await withLock(dir, async () => {
    let ca = await readCa(paths.caPath, caKeyPath);
    if (!ca) {
      ca = await generateCa();
      await writeAtomic(caKeyPath, ca.key, 0o600);
      await writeAtomic(paths.caPath, ca.cert, 0o644);
    }
    if (!(await leafIsUsable(paths.certPath, paths.keyPath, ca.cert))) {
      const leaf = await generate([{ name: 'commonName', value: 'localhost' }], {
        keySize: 2048,
        algorithm: 'sha256',
        notAfterDate: new Date(Date.now() + 365 * DAY_MS),
        ca: { key: ca.key, cert: ca.cert },
        extensions: [
          { name: 'basicConstraints', cA: false, critical: true },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true },
          {
            name: 'subjectAltName',
            altNames: [
              { type: 2, value: 'localhost' },
              { type: 7, ip: '127.0.0.1' },
              { type: 7, ip: '::1' },
            ],
          },
        ],
      });
      await writeAtomic(paths.keyPath, leaf.private, 0o600);
      await writeAtomic(paths.certPath, leaf.cert, 0o644);
    }
  });
  return paths;
}

/** The certificate credential registered on the API app (private key + certificate in one PEM). */
export async function ensureAppCertificate(dir: string = defaultCertDir): Promise<AppCertificate> {
  const pemPath = join(dir, 'app-credential.pem');
  await mkdir(dir, { recursive: true });
  return withLock(dir, async () => {
    const existing = await readAppCertificate(pemPath);
    if (existing) return existing;
    const generated = await generate([{ name: 'commonName', value: 'obo-api-emulator-credential' }], {
      keySize: 2048,
      algorithm: 'sha256',
      notAfterDate: new Date(Date.now() + 2 * 365 * DAY_MS),
    });
    await writeAtomic(pemPath, `${generated.private.trim()}\n${generated.cert.trim()}\n`, 0o600);
    const created = await readAppCertificate(pemPath);
    if (!created) throw new Error('emulator: could not read back the app certificate');
    return created;
  });
}

/** A self-signed certificate for a token-signing key, as Entra publishes in `x5c`. */
export async function selfSignedCertificate(keyPair: { privateKey: string; publicKey: string }, commonName: string): Promise<Buffer> {
  const generated = await generate([{ name: 'commonName', value: commonName }], {
    algorithm: 'sha256',
    keyPair,
    notBeforeDate: new Date(Date.now() - DAY_MS),
    notAfterDate: new Date(Date.now() + 2 * 365 * DAY_MS),
  });
  return new X509Certificate(generated.cert).raw;
}

function splitPem(pem: string): { privateKeyPem: string | undefined; certificatePems: string[] } {
  const keyMatch = /-----BEGIN (?:RSA )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA )?PRIVATE KEY-----/.exec(pem);
  const certificatePems = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return { privateKeyPem: keyMatch?.[0], certificatePems };
}

async function readAppCertificate(pemPath: string): Promise<AppCertificate | undefined> {
  const pem = await readText(pemPath);
  if (!pem) return undefined;
  try {
    const { privateKeyPem, certificatePems } = splitPem(pem);
    const certificatePem = certificatePems[0];
    if (!privateKeyPem || !certificatePem) return undefined;
    const cert = new X509Certificate(certificatePem);
    if (!expiresLater(cert) || !sameKey(privateKeyPem, cert)) return undefined;
    return {
      pemPath,
      privateKeyPem,
      certificatePem,
      thumbprintSha1Hex: createHash('sha1').update(cert.raw).digest('hex'),
      thumbprintSha256Hex: createHash('sha256').update(cert.raw).digest('hex'),
    };
  } catch {
    return undefined;
  }
}

async function generateCa(): Promise<{ key: string; cert: string }> {
  const ca = await generate([{ name: 'commonName', value: 'OBO Emulator Local CA' }], {
    keySize: 2048,
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 5 * 365 * DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return { key: ca.private, cert: ca.cert };
}

async function readCa(certPath: string, keyPath: string): Promise<{ key: string; cert: string } | undefined> {
  const [cert, key] = await Promise.all([readText(certPath), readText(keyPath)]);
  if (!cert || !key) return undefined;
  try {
    const parsed = new X509Certificate(cert);
    if (!parsed.ca || !expiresLater(parsed) || !sameKey(key, parsed)) return undefined;
    return { key, cert };
  } catch {
    return undefined;
  }
}

async function leafIsUsable(certPath: string, keyPath: string, caPem: string): Promise<boolean> {
  const [cert, key] = await Promise.all([readText(certPath), readText(keyPath)]);
  if (!cert || !key) return false;
  try {
    const leaf = new X509Certificate(cert);
    const ca = new X509Certificate(caPem);
    return (
      expiresLater(leaf) &&
      leaf.verify(ca.publicKey) &&
      sameKey(key, leaf) &&
      leaf.checkIP('127.0.0.1') !== undefined &&
      leaf.checkIP('::1') !== undefined &&
      leaf.checkHost('localhost') !== undefined
    );
  } catch {
    return false;
  }
}

function expiresLater(cert: X509Certificate): boolean {
  return new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_MS;
}

function sameKey(privateKeyPem: string, cert: X509Certificate): boolean {
  const fromKey = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' });
  return fromKey.equals(cert.publicKey.export({ type: 'spki', format: 'der' }));
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

async function writeAtomic(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, content, { mode });
  await rename(tmp, path);
}

// A lock file serialises generation across processes and concurrent calls, so a CA and the
// leaf it signed are always written as a pair.
async function withLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const lockPath = join(dir, '.lock');
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.close();
      break;
    } catch (error: unknown) {
      if (!isErrnoCode(error, 'EEXIST')) throw error;
      const info = await stat(lockPath).catch(() => undefined);
      if (info && Date.now() - info.mtimeMs > 30_000) await rm(lockPath, { force: true });
      if (Date.now() > deadline) throw new Error(`emulator: timed out waiting for ${lockPath}`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lockPath, { force: true });
  }
}

function isErrnoCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && 'code' in error && error.code === code;
}
