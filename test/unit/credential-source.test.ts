import { mkdtemp, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { generate } from 'selfsigned';
import { ConfigError, loadConfig, type Environment } from '../../api/config/load-config.js';
import { parseCertificatePem } from '../../api/config/credential.js';
import { createCredentialSource, refusedAsBadCredential, REFUSED_CREDENTIAL_RETRY_MS } from '../../api/token/credential-source.js';
import { captureLogger } from '../support/logger.js';

const base: Environment = { AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47', AZURE_CLIENT_ID: '6e74172b-be56-4843-9ff4-e66a39bb12e3' };

async function certificatePem(name: string): Promise<string> {
  const pems = await generate([{ name: 'commonName', value: name }], { keySize: 2048, algorithm: 'sha256' });
  return `${pems.private.trim()}\n${pems.cert.trim()}\n`;
}

function thumbprintOf(pem: string): string {
  const parsed = parseCertificatePem(pem, undefined);
  if (typeof parsed === 'string') throw new Error(parsed);
  return parsed.thumbprintSha256;
}

function problemsOf(env: Environment): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  expect.fail('expected a ConfigError');
}

/**
 * A Kubernetes secret volume as kubelet (and the Key Vault CSI driver) writes it:
 * `cert.pem` → `..data/cert.pem`, `..data` → `..<timestamp>/`, swapped by renaming a new `..data` link.
 */
async function secretVolume(pem: string): Promise<{ path: string; swap(pem: string): Promise<void>; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'secret-volume-'));
  let generation = 0;
  async function swap(content: string): Promise<void> {
    generation += 1;
    const target = `..gen_${generation}`;
    await mkdir(join(dir, target));
    await writeFile(join(dir, target, 'cert.pem'), content);
    await symlink(target, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  }
  await swap(pem);
  await symlink('..data/cert.pem', join(dir, 'cert.pem'));
  return { path: join(dir, 'cert.pem'), swap, close: () => rm(dir, { recursive: true, force: true }) };
}

describe('credential source (issue 12.2)', function () {
  this.timeout(30_000);
  let first: string;
  let second: string;
  before(async () => {
    [first, second] = await Promise.all([certificatePem('first'), certificatePem('second')]);
  });

  describe('configuration', () => {
    it('reads a next secret or certificate for a rotation, and refuses two, or one equal to the current', async () => {
      const volume = await secretVolume(first);
      try {
        const secrets = loadConfig({ ...base, AZURE_CLIENT_SECRET: 'old-secret', AZURE_CLIENT_SECRET_NEXT: 'new-secret' });
        expect(secrets.credential).to.deep.equal({ kind: 'secret', secret: 'old-secret', next: { kind: 'secret', secret: 'new-secret' } });
        const toCertificate = loadConfig({ ...base, AZURE_CLIENT_SECRET: 'old-secret', AZURE_CLIENT_CERTIFICATE_NEXT_PATH: volume.path });
        expect(toCertificate.credential.next).to.include({ kind: 'certificate', path: volume.path, thumbprintSha256: thumbprintOf(first) });

        const both = problemsOf({
          ...base,
          AZURE_CLIENT_SECRET: 'a',
          AZURE_CLIENT_SECRET_NEXT: 'b',
          AZURE_CLIENT_CERTIFICATE_NEXT_PATH: volume.path,
        });
        expect(both.join('\n')).to.match(/AZURE_CLIENT_SECRET_NEXT: set at most one/);
        const same = problemsOf({ ...base, AZURE_CLIENT_SECRET: 'same-secret-value', AZURE_CLIENT_SECRET_NEXT: 'same-secret-value' });
        expect(same.join('\n'))
          .to.match(/the next credential is the current one/)
          .and.not.include('same-secret-value');
        const unreadable = problemsOf({ ...base, AZURE_CLIENT_SECRET: 'a', AZURE_CLIENT_CERTIFICATE_NEXT_PATH: join(volume.path, 'nope') });
        expect(unreadable.join('\n')).to.match(/AZURE_CLIENT_CERTIFICATE_NEXT_PATH: cannot read the file/);
      } finally {
        await volume.close();
      }
    });
  });

  describe('certificate files', () => {
    it('follows a symlink swap (..data → new directory) on the next request, and logs the new thumbprint', async () => {
      const volume = await secretVolume(first);
      const { logger, lines } = captureLogger();
      try {
        const config = loadConfig({ ...base, AZURE_CLIENT_CERTIFICATE_PATH: volume.path });
        const source = createCredentialSource(config.credential, { logger });
        const [before] = await source.attempts();
        expect(before?.id).to.equal(thumbprintOf(first));
        await volume.swap(second);
        const [after] = await source.attempts();
        expect(after?.id).to.equal(thumbprintOf(second));
        expect(after?.auth.clientCertificate?.thumbprintSha256).to.equal(thumbprintOf(second));
        expect(lines.join('\n')).to.include('certificate file reloaded').and.include(thumbprintOf(second));
      } finally {
        await volume.close();
      }
    });

    it('keeps the previous certificate while the file is half written or unparsable, warns once without the file, then takes the finished one', async () => {
      const volume = await secretVolume(first);
      const { logger, lines } = captureLogger();
      try {
        const config = loadConfig({ ...base, AZURE_CLIENT_CERTIFICATE_PATH: volume.path });
        const source = createCredentialSource(config.credential, { logger });
        await source.attempts();
        // Rewritten in place, and caught half way.
        await writeFile(volume.path, second.slice(0, second.length / 2));
        for (let i = 0; i < 3; i += 1) expect((await source.attempts())[0]?.id).to.equal(thumbprintOf(first));
        // Another certificate's key with this certificate: parses, but is not usable either.
        await writeFile(
          volume.path,
          `${second.split('-----BEGIN CERTIFICATE-----')[0] ?? ''}${first.slice(first.indexOf('-----BEGIN CERTIFICATE-----'))}`,
        );
        expect((await source.attempts())[0]?.id).to.equal(thumbprintOf(first));
        const warnings = lines.filter((line) => line.includes('keeping the previous certificate'));
        expect(warnings, 'one warning per broken version of the file').to.have.length(2);
        expect(warnings.join('\n')).to.include('does not belong to the certificate');
        expect(lines.join('\n')).not.to.include('PRIVATE KEY').and.not.include('BEGIN CERTIFICATE');
        await writeFile(volume.path, second);
        expect((await source.attempts())[0]?.id).to.equal(thumbprintOf(second));
      } finally {
        await volume.close();
      }
    });

    it('keeps the certificate it has when the file disappears', async () => {
      const volume = await secretVolume(first);
      const { logger } = captureLogger();
      const config = loadConfig({ ...base, AZURE_CLIENT_CERTIFICATE_PATH: volume.path });
      const source = createCredentialSource(config.credential, { logger });
      await volume.close();
      expect((await source.attempts())[0]?.id).to.equal(thumbprintOf(first));
    });
  });

  describe('two credentials during a rotation', () => {
    const secrets = { kind: 'secret', secret: 'current-secret', next: { kind: 'secret', secret: 'next-secret' } } as const;
    const slots = async (source: ReturnType<typeof createCredentialSource>) => (await source.attempts()).map((a) => a.slot);

    it('tries the one in use, then the other; switches to the one Entra accepted, logging it once without the secret', async () => {
      const { logger, lines } = captureLogger();
      const source = createCredentialSource(secrets, { logger });
      expect(await slots(source)).to.deep.equal(['current', 'next']);
      const [current, next] = await source.attempts();
      if (!current || !next) expect.fail('two attempts');
      source.refused(current, 7000215);
      expect(await slots(source), 'a refused credential is left out').to.deep.equal(['next']);
      source.accepted(next);
      source.accepted(next);
      expect(await slots(source)).to.deep.equal(['next']);
      expect(lines.filter((line) => line.includes('using it from now on'))).to.have.length(1);
      expect(lines.join('\n')).to.include('7000215').and.not.include('current-secret').and.not.include('next-secret');
    });

    it('tries a refused credential again only after the retry interval; with both refused, none until then', async () => {
      // A clock that moves only when told: the interval is checked to the millisecond.
      let time = 1_800_000_000_000;
      const clock = { now: () => time, advance: (ms: number) => void (time += ms) };
      const { logger, lines } = captureLogger();
      const source = createCredentialSource(secrets, { logger, now: clock.now });
      const [current, next] = await source.attempts();
      if (!current || !next) expect.fail('two attempts');
      source.refused(current, 7000222);
      source.refused(next, 7000215);
      source.refused(next, 7000215);
      expect(await slots(source)).to.deep.equal([]);
      expect(
        lines.filter((line) => line.includes('Entra refused')),
        'logged once per refusal interval',
      ).to.have.length(2);
      clock.advance(REFUSED_CREDENTIAL_RETRY_MS - 1);
      expect(await slots(source)).to.deep.equal([]);
      clock.advance(1);
      expect(await slots(source)).to.deep.equal(['current', 'next']);
    });

    it('remembers refusals by value: a rewritten federated token file is tried at once', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'federated-'));
      const tokenFile = join(dir, 'token');
      try {
        await writeFile(tokenFile, 'stale-assertion\n');
        const source = createCredentialSource({ kind: 'federated', tokenFile }, { logger: captureLogger().logger });
        const [stale] = await source.attempts();
        if (!stale) expect.fail('one attempt');
        expect(stale.auth.clientAssertion).to.equal('stale-assertion');
        source.refused(stale, 700024);
        expect(await source.attempts()).to.deep.equal([]);
        await writeFile(tokenFile, 'fresh-assertion\n');
        expect((await source.attempts()).map((a) => a.auth.clientAssertion)).to.deep.equal(['fresh-assertion']);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('counts only invalid_client answers about the credential as a refused credential', () => {
      for (const code of [7000215, 7000222, 700027, 700024]) {
        expect(refusedAsBadCredential({ entraError: { error: 'invalid_client', error_codes: [code] } })).to.equal(code);
      }
      expect(refusedAsBadCredential({ entraError: { error: 'invalid_client', error_codes: [700016] } }), 'unknown app').to.equal(undefined);
      expect(refusedAsBadCredential({ entraError: { error: 'invalid_grant', error_codes: [700024] } })).to.equal(undefined);
      expect(refusedAsBadCredential({ status: 503 })).to.equal(undefined);
    });
  });
});
