// npx tsx test/emulator/cli.ts <ca | start | mint> — see usage() below.
import { request } from 'node:https';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCertDir, ensureCertificates } from './certs.js';
import { startEmulator } from './index.js';

function usage(): string {
  return `Usage:
  cli.ts ca [--cert-dir DIR]
      Ensure the local CA and server certificate exist; print the CA path.
  cli.ts start [--entra-port N] [--graph-port N] [--cert-dir DIR] [--issuer-style microsoft|origin] [--token-lifetime SECONDS]
      Run the emulator in the foreground; print the environment a service needs.
  cli.ts mint --authority-host URL [--user alice|bob|carol] [--version 1|2] [--scp "..."] [--aud A] [--lifetime SECONDS] [--ca FILE]
      Ask a running emulator for a user access token and print it.
`;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      'cert-dir': { type: 'string' },
      'entra-port': { type: 'string' },
      'graph-port': { type: 'string' },
      'issuer-style': { type: 'string' },
      'token-lifetime': { type: 'string' },
      'authority-host': { type: 'string' },
      user: { type: 'string' },
      version: { type: 'string' },
      scp: { type: 'string' },
      aud: { type: 'string' },
      lifetime: { type: 'string' },
      ca: { type: 'string' },
    },
    strict: true,
  });
  switch (command) {
    case 'ca': {
      const paths = await ensureCertificates(values['cert-dir'] ?? defaultCertDir);
      process.stdout.write(`${paths.caPath}\n`);
      return;
    }
    case 'start':
      return start(values);
    case 'mint':
      return mint(values);
    default:
      process.stderr.write(usage());
      process.exitCode = command === undefined || command === 'help' || command === '--help' ? 0 : 2;
  }
}

type Values = Record<string, string | undefined>;

async function start(values: Values): Promise<void> {
  const style = values['issuer-style'];
  if (style !== undefined && style !== 'microsoft' && style !== 'origin') throw new Error('--issuer-style must be microsoft or origin');
  const emulator = await startEmulator({
    entraPort: integer(values['entra-port'], 0),
    graphPort: integer(values['graph-port'], 0),
    ...(values['cert-dir'] ? { certDir: values['cert-dir'] } : {}),
    ...(style ? { issuerStyle: style } : {}),
    ...(values['token-lifetime'] ? { accessTokenLifetimeSeconds: integer(values['token-lifetime'], 3599) } : {}),
  });
  process.stdout.write(
    [
      `AZURE_TENANT_ID=${emulator.tenant.id}`,
      `AZURE_CLIENT_ID=${emulator.api.clientId}`,
      `AZURE_CLIENT_SECRET=${emulator.api.clientSecret}`,
      `AZURE_AUTHORITY_HOST=${emulator.authorityHost}`,
      `GRAPH_BASE_URL=${emulator.graphBaseUrl}`,
      `NODE_EXTRA_CA_CERTS=${emulator.caPath}`,
      `# certificate credential: ${emulator.api.certificatePemPath} (SHA-256 thumbprint ${emulator.api.certificateThumbprintSha256})`,
      `# client assertion file: ${emulator.api.federatedTokenFile}`,
      `# users: ${Object.values(emulator.users)
        .map((u) => `${u.key}=${u.upn}`)
        .join(' ')}; control API: ${emulator.authorityHost}/_emulator`,
      '',
    ].join('\n'),
  );
  const stop = (): void => {
    void emulator.close().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function mint(values: Values): Promise<void> {
  const host = values['authority-host'];
  if (!host) throw new Error('--authority-host is required');
  const body: Record<string, unknown> = { user: values.user ?? 'alice' };
  if (values.version) body.version = integer(values.version, 2);
  if (values.scp !== undefined) body.scp = values.scp;
  if (values.aud !== undefined) body.aud = values.aud;
  if (values.lifetime !== undefined) body.lifetimeSeconds = integer(values.lifetime, 3600);
  // Trust the emulator CA explicitly, so the command works without NODE_EXTRA_CA_CERTS.
  const ca = await readFile(values.ca ?? join(values['cert-dir'] ?? defaultCertDir, 'ca.pem'), 'utf8');
  const reply = await postJson(new URL('/_emulator/mint', host), body, ca);
  if (typeof reply !== 'object' || reply === null || !('token' in reply) || typeof reply.token !== 'string') {
    throw new Error(`unexpected reply: ${JSON.stringify(reply)}`);
  }
  process.stdout.write(`${reply.token}\n`);
}

function postJson(url: URL, body: unknown, ca: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const req = request(
      url,
      { method: 'POST', ca, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 500) >= 400) return reject(new Error(`HTTP ${res.statusCode ?? '?'}: ${raw}`));
          try {
            resolve(JSON.parse(raw));
          } catch {
            reject(new Error(`not JSON: ${raw}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

function integer(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
