// Local Microsoft Entra ID + Microsoft Graph emulator: two HTTPS servers on 127.0.0.1 that
// real @azure/msal-node and jose talk to unchanged. Each startEmulator() call is independent.
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultCertDir, ensureAppCertificate, ensureCertificates } from './certs.js';
import { controlHandler } from './control.js';
import { entraHandler } from './entra.js';
import { GraphService, graphHandler } from './graph.js';
import { listenHttps, type HttpContext, type RunningServer } from './http.js';
import { KeyRing } from './keys.js';
import { MSA_TENANT_ID, createDirectory, type DirectoryUser } from './seed.js';
import { EmulatorState } from './state.js';
import { TokenFactory, clientAssertion } from './tokens.js';
import type { Emulator, EmulatorOptions, EmulatorUser, UserName } from './types.js';

export type * from './types.js';

const FEDERATED_TOKEN_LIFETIME_SECONDS = 3600;
const FEDERATED_TOKEN_REFRESH_MS = 10 * 60_000;

export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const certDir = options.certDir ?? defaultCertDir;
  const paths = await ensureCertificates(certDir);
  const [appCert, ring, tlsKey, tlsCert] = await Promise.all([
    ensureAppCertificate(certDir),
    KeyRing.create(MSA_TENANT_ID),
    readFile(paths.keyPath, 'utf8'),
    readFile(paths.certPath, 'utf8'),
  ]);
  const directory = createDirectory({
    sha1Hex: appCert.thumbprintSha1Hex,
    sha256Hex: appCert.thumbprintSha256Hex,
    certificatePem: appCert.certificatePem,
  });
  const state = new EmulatorState(directory, ring, {
    issuerStyle: options.issuerStyle ?? 'microsoft',
    accessTokenLifetimeSeconds: options.accessTokenLifetimeSeconds ?? 3599,
    syntheticUsers: options.syntheticUsers ?? false,
  });
  const tokens = new TokenFactory(state);

  let emulator: Emulator | undefined;
  const current = (): Emulator => {
    if (!emulator) throw new Error('emulator is still starting');
    return emulator;
  };
  const logTo =
    (server: 'entra' | 'graph') =>
    (ctx: HttpContext): void => {
      if (ctx.path.startsWith('/_emulator')) return;
      state.recordRequest({
        time: new Date(ctx.startedAt).toISOString(),
        server,
        method: ctx.method,
        path: ctx.path,
        query: [...new Set(ctx.url.searchParams.keys())],
        status: ctx.res.headersSent ? ctx.res.statusCode : 0,
        formParams: ctx.note.formParams ?? [],
        headers: Object.keys(ctx.req.headers),
        ...(ctx.note.scope !== undefined ? { scope: ctx.note.scope } : {}),
        ...(ctx.note.grantType !== undefined ? { grantType: ctx.note.grantType } : {}),
        ...(ctx.note.clientRequestId !== undefined ? { clientRequestId: ctx.note.clientRequestId } : {}),
        requestId: ctx.requestId,
        ...(ctx.note.error !== undefined ? { error: ctx.note.error } : {}),
        ...(ctx.note.fault !== undefined ? { fault: ctx.note.fault } : {}),
        durationMs: Date.now() - ctx.startedAt,
      });
    };

  const servers: RunningServer[] = [];
  let federatedDir: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  const closeAll = async (): Promise<void> => {
    if (timer) clearInterval(timer);
    await Promise.all(servers.map((s) => s.close()));
    if (federatedDir) await rm(federatedDir, { recursive: true, force: true });
  };

  try {
    const tls = { key: tlsKey, cert: tlsCert };
    servers.push(await listenHttps({ ...tls, port: options.entraPort ?? 0 }, entraHandler(state, tokens, controlHandler(current)), logTo('entra')));
    servers.push(await listenHttps({ ...tls, port: options.graphPort ?? 0 }, graphHandler(state, new GraphService(state)), logTo('graph')));
    const [entra, graph] = servers as [RunningServer, RunningServer];
    state.authorityHost = entra.origin;
    state.graphBaseUrl = graph.origin;

    // Like a projected workload-identity token: a file that is rewritten before it expires.
    federatedDir = await mkdtemp(join(tmpdir(), 'entra-emulator-'));
    const federatedTokenFile = join(federatedDir, 'client-assertion.jwt');
    const privateKey = createPrivateKey(appCert.privateKeyPem);
    const writeAssertion = (): Promise<void> =>
      writeFile(
        federatedTokenFile,
        clientAssertion({
          clientId: directory.api.clientId,
          audience: `${entra.origin}/${directory.tenant.id}/oauth2/v2.0/token`,
          privateKey,
          certificateSha256Hex: appCert.thumbprintSha256Hex,
          lifetimeSeconds: FEDERATED_TOKEN_LIFETIME_SECONDS,
        }),
        { mode: 0o600 },
      );
    await writeAssertion();
    timer = setInterval(() => void writeAssertion().catch(() => undefined), FEDERATED_TOKEN_REFRESH_MS);
    timer.unref();

    const faults = state.faults.control();
    const keys = ring.control((key) => state.keyIssuer(key));
    const { api, spa, otherApi, named } = directory;
    emulator = {
      authorityHost: entra.origin,
      graphBaseUrl: graph.origin,
      caPath: paths.caPath,
      tenant: { id: directory.tenant.id, domain: directory.tenant.domain },
      otherTenant: { id: directory.otherTenant.id, domain: directory.otherTenant.domain },
      api: {
        clientId: api.clientId,
        clientSecret: api.secrets[0]?.value ?? '',
        expiredClientSecret: api.secrets[1]?.value ?? '',
        appIdUri: api.appIdUris[0] ?? '',
        certificatePemPath: appCert.pemPath,
        certificateThumbprint: appCert.thumbprintSha1Hex,
        certificateThumbprintSha256: appCert.thumbprintSha256Hex,
        federatedTokenFile,
      },
      spa: { clientId: spa.clientId },
      otherApi: { clientId: otherApi.clientId, appIdUri: otherApi.appIdUris[0] ?? '' },
      users: { alice: publicUser('alice', named.alice), bob: publicUser('bob', named.bob), carol: publicUser('carol', named.carol) },
      mint: (o) => tokens.mint(o),
      mintRaw: (p) => tokens.mintRaw(p),
      mintIdToken: (u, o) => tokens.mintIdToken(u, o),
      mintGraphTokenReplay: (u) => tokens.mintGraphTokenReplay(u),
      mintGraphToken: (o) => tokens.mintGraphToken(o),
      counters: state.counters,
      resetCounters: () => state.resetCounters(),
      requests: () => state.requests(),
      faults,
      keys,
      setUser: (name, flags) => state.setUser(name, flags),
      credentials: {
        addSecret: () => {
          const value = `emu~${randomBytes(27).toString('base64url')}`;
          api.secrets.push({ value, expiresAt: Date.now() + 365 * 86_400_000 });
          return value;
        },
        removeSecret: (value) => {
          api.secrets = api.secrets.filter((secret) => secret.value !== value);
        },
        addCertificate: (certificatePem) => {
          const certificate = new X509Certificate(certificatePem);
          const hex = (fingerprint: string): string => fingerprint.replaceAll(':', '').toLowerCase();
          api.certificates.push({ sha1Hex: hex(certificate.fingerprint), sha256Hex: hex(certificate.fingerprint256), certificatePem });
        },
        removeCertificate: (thumbprint) => {
          api.certificates = api.certificates.filter((c) => c.sha256Hex.toLowerCase() !== thumbprint.toLowerCase());
        },
      },
      setAppTokenLifetime: (seconds) => {
        state.appTokenLifetimeSeconds = seconds;
      },
      reset: () => state.reset(),
      close: closeAll,
    };
    return emulator;
  } catch (error: unknown) {
    await closeAll();
    throw error;
  }
}

function publicUser(key: UserName, user: DirectoryUser): EmulatorUser {
  return {
    key,
    oid: user.id,
    tid: user.tenantId,
    upn: user.userPrincipalName,
    name: user.displayName,
    givenName: user.givenName,
    surname: user.surname,
  };
}
