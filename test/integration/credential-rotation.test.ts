import { createPrivateKey } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { generate } from 'selfsigned';
import { parseCertificatePem } from '../../api/config/credential.js';
import { REFUSED_CREDENTIAL_RETRY_MS } from '../../api/token/credential-source.js';
import { clientAssertion } from '../emulator/tokens.js';
import { manualClock } from '../support/clock.js';
import { useEmulator, useServices } from '../support/fixtures.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { until } from '../support/wait.js';

/** Requests to the token endpoint, by the grant they were. */
const tokenRequests = (emulator: { requests(): { path: string }[] }) =>
  emulator.requests().filter((r) => r.path.endsWith('/oauth2/v2.0/token')).length;

/**
 * Steady load: `workers` loops, each sending one request after the other, every one a new user
 * token (a new cache partition, so an exchange). `generation` lets a test wait until every
 * worker has started a request after some event (all requests started before it have ended).
 */
function load(api: TestService, mint: () => string, workers = 4) {
  const statuses: number[] = [];
  let stopped = false;
  let generation = 0;
  const startedIn = new Array<number>(workers).fill(-1);
  const loops = startedIn.map(async (_, worker) => {
    while (!stopped) {
      startedIn[worker] = generation;
      const response = await api.request.get('/api/me').set(bearer(mint()));
      statuses.push(response.status);
    }
  });
  return {
    statuses,
    /** Resolves once every worker has started a request after this call. */
    async settle(): Promise<void> {
      generation += 1;
      const wanted = generation;
      await until('every worker started a request after the change', () => startedIn.every((g) => g >= wanted), 20_000);
    },
    async completed(count: number): Promise<void> {
      await until(`${count} requests completed`, () => statuses.length >= count, 20_000);
    },
    async stop(): Promise<number[]> {
      stopped = true;
      await Promise.all(loops);
      return statuses;
    },
  };
}

async function newCertificate(name: string): Promise<{ pem: string; certificatePem: string; thumbprintSha256: string }> {
  const pems = await generate([{ name: 'commonName', value: name }], { keySize: 2048, algorithm: 'sha256' });
  const pem = `${pems.private.trim()}\n${pems.cert.trim()}\n`;
  const parsed = parseCertificatePem(pem, undefined);
  if (typeof parsed === 'string') throw new Error(parsed);
  return { pem, certificatePem: parsed.certificatePem, thumbprintSha256: parsed.thumbprintSha256 };
}

describe('credentials that rotate without a restart (issue 12.2)', function () {
  this.timeout(60_000);
  // Its own emulator: these tests change the API registration's credentials, which reset() keeps.
  const emulator = useEmulator();
  const services = useServices(emulator);
  const dirs: string[] = [];
  beforeEach(() => {
    emulator.reset();
  });
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('a secret rotated in Entra (new added, old removed) under load: no request fails, the next secret is used from then on, logged once', async () => {
    const oldSecret = emulator.api.clientSecret;
    const newSecret = emulator.credentials.addSecret();
    const api = await services.start({ AZURE_CLIENT_SECRET: oldSecret, AZURE_CLIENT_SECRET_NEXT: newSecret });
    const traffic = load(api, () => emulator.mint());
    await traffic.completed(20);
    emulator.credentials.removeSecret(oldSecret);
    await traffic.settle();
    await traffic.completed(traffic.statuses.length + 20);
    const statuses = await traffic.stop();
    expect(
      statuses.filter((status) => status !== 200),
      'failed requests',
    ).to.deep.equal([]);
    // One request per exchange, plus at most one refused one per request in flight at the switch.
    expect(emulator.counters.token - statuses.length).to.be.within(1, 4);

    emulator.resetCounters();
    for (let i = 0; i < 5; i += 1) await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
    expect(emulator.counters.token, 'the refused secret is not tried again').to.equal(5);
    const logs = api.logs.join('\n');
    expect(api.logs.filter((line) => line.includes('using it from now on'))).to.have.length(1);
    expect(logs).to.include('7000215').and.not.include(oldSecret).and.not.include(newSecret);
  });

  it('an expired current secret (AADSTS7000222) with a next one: served, one refused request, then only the next', async () => {
    const api = await services.start({
      AZURE_CLIENT_SECRET: emulator.api.expiredClientSecret,
      AZURE_CLIENT_SECRET_NEXT: emulator.credentials.addSecret(),
    });
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
    expect(tokenRequests(emulator)).to.equal(2);
    await api.request
      .get('/api/me')
      .set(bearer(emulator.mint({ user: 'bob' })))
      .expect(200);
    expect(tokenRequests(emulator)).to.equal(3);
  });

  it('a refused credential never loops: both refused is 500 with no further token request until the retry interval has passed', async () => {
    const clock = manualClock();
    const api = await services.start(
      { AZURE_CLIENT_SECRET: 'wrong-current-secret', AZURE_CLIENT_SECRET_NEXT: 'wrong-next-secret' },
      { now: clock.now },
    );
    const response = await api.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    expect((response.body as { error?: string }).error).to.equal('server_error');
    expect(tokenRequests(emulator), 'each credential once').to.equal(2);
    for (let i = 0; i < 5; i += 1) await api.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    expect(tokenRequests(emulator), 'no request while both are refused').to.equal(2);
    clock.advance(REFUSED_CREDENTIAL_RETRY_MS + 1_000);
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    expect(tokenRequests(emulator), 'tried again after the interval, once each').to.equal(4);
    const logs = api.logs.join('\n');
    expect(logs).to.include('every configured credential was refused lately');
    expect(logs).not.to.include('wrong-current-secret').and.not.to.include('wrong-next-secret');
  });

  it('a certificate swapped through ..data (Kubernetes secret volume) under load: half-written file ignored, new one used at once, no request fails', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'secret-volume-'));
    dirs.push(dir);
    let generation = 0;
    const swap = async (content: string): Promise<void> => {
      generation += 1;
      await mkdir(join(dir, `..gen_${generation}`));
      await writeFile(join(dir, `..gen_${generation}`, 'cert.pem'), content);
      await symlink(`..gen_${generation}`, join(dir, '..data_tmp'));
      await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    };
    await swap(await readFile(emulator.api.certificatePemPath, 'utf8'));
    await symlink('..data/cert.pem', join(dir, 'cert.pem'));
    const rotated = await newCertificate('rotated-credential');
    emulator.credentials.addCertificate(rotated.certificatePem);
    const api = await services.start({ AZURE_CLIENT_SECRET: '', AZURE_CLIENT_CERTIFICATE_PATH: join(dir, 'cert.pem') });

    const traffic = load(api, () => emulator.mint());
    await traffic.completed(10);
    await swap(rotated.pem.slice(0, rotated.pem.length - 200));
    await traffic.settle();
    await traffic.completed(traffic.statuses.length + 10);
    await swap(rotated.pem);
    // Every request started from now on signs with the new certificate: the old one can go.
    await traffic.settle();
    emulator.credentials.removeCertificate(emulator.api.certificateThumbprintSha256);
    await traffic.completed(traffic.statuses.length + 20);
    const statuses = await traffic.stop();
    expect(
      statuses.filter((status) => status !== 200),
      'failed requests',
    ).to.deep.equal([]);
    expect(emulator.counters.token, 'no refused request').to.equal(statuses.length);
    const logs = api.logs.join('\n');
    expect(api.logs.filter((line) => line.includes('is not usable; keeping the previous certificate'))).to.have.length(1);
    expect(logs).to.include('certificate file reloaded').and.include(rotated.thumbprintSha256);
    expect(logs).not.to.include('PRIVATE KEY');
    emulator.credentials.addCertificate(await readFile(emulator.api.certificatePemPath, 'utf8'));
  });

  it('a rewritten federated token file is used at once, and a refused one is not sent again', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'federated-'));
    dirs.push(dir);
    const tokenFile = join(dir, 'azure-identity-token');
    const pem = await readFile(emulator.api.certificatePemPath, 'utf8');
    const assertion = (lifetimeSeconds: number) =>
      clientAssertion({
        clientId: emulator.api.clientId,
        audience: `${emulator.authorityHost}/${emulator.tenant.id}/oauth2/v2.0/token`,
        privateKey: createPrivateKey(pem),
        certificateSha256Hex: emulator.api.certificateThumbprintSha256,
        lifetimeSeconds,
      });
    // Expired well past Entra's skew: AADSTS700024.
    await writeFile(tokenFile, assertion(-600));
    const api = await services.start({ AZURE_CLIENT_SECRET: '', AZURE_FEDERATED_TOKEN_FILE: tokenFile });
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    expect(tokenRequests(emulator), 'the refused assertion went once').to.equal(1);
    expect(emulator.requests().at(-1)?.error).to.include('700024');
    await writeFile(tokenFile, assertion(600));
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
    expect(tokenRequests(emulator)).to.equal(2);
  });
});
