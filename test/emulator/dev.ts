/**
 * `npm run dev`: the emulator, and the service started as a user starts it (its own process,
 * configured only through the environment, trusting the emulator's CA through
 * NODE_EXTRA_CA_CERTS), then a ready-to-run curl with a freshly minted token. Ctrl-C stops both.
 */
import { spawn } from 'node:child_process';
import { startEmulator } from './index.js';

const port = process.env['PORT'] ?? '3000';
const emulator = await startEmulator();
const environment = {
  ...process.env,
  PORT: port,
  AZURE_TENANT_ID: emulator.tenant.id,
  AZURE_CLIENT_ID: emulator.api.clientId,
  AZURE_CLIENT_SECRET: emulator.api.clientSecret,
  AZURE_AUTHORITY_HOST: emulator.authorityHost,
  GRAPH_BASE_URL: emulator.graphBaseUrl,
  NODE_EXTRA_CA_CERTS: emulator.caPath,
};
const service = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts'], { env: environment, stdio: 'inherit' });

async function waitUntilReady(): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the service did not become ready');
}

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  service.kill('SIGTERM');
  await emulator.close();
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
service.on('exit', (code) => void stop(code ?? 1));

await waitUntilReady();
const token = emulator.mint({ user: 'alice' });
process.stdout.write(`
Emulator:  Entra ID at ${emulator.authorityHost}, Graph at ${emulator.graphBaseUrl}
Service:   http://localhost:${port}   (tenant ${emulator.tenant.id}, client ${emulator.api.clientId})

Call it as ${emulator.users.alice.name}:

  curl -s -H "Authorization: Bearer ${token}" http://localhost:${port}/api/me

Mint another token:  npx tsx test/emulator/cli.ts mint --authority-host ${emulator.authorityHost} --user bob
Ctrl-C stops both.
`);
