import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import supertest from 'supertest';
import { createApp, type AppDependencies, type Service } from '../../api/app.js';
import { loadConfig, type Config, type Environment } from '../../api/config/load-config.js';
import type { Emulator } from '../emulator/index.js';
import { contractCheckedAgent, contractGuard, loadContract } from './openapi-contract.js';

export interface TestService {
  service: Service;
  config: Config;
  server: Server;
  baseUrl: string;
  request: ReturnType<typeof supertest>;
  /** Every log line the service wrote, as JSON text. */
  logs: string[];
  /** Every way a response of this service broke openapi/openapi.yaml (each also failed its request). */
  contractViolations: string[];
  close(): Promise<void>;
}

/** Every log line of every service the tests started: the suite-wide secret scan reads it. */
export const allServiceLogs: string[] = [];
/** Every client secret a test service was configured with: none may appear in a log line. */
export const configuredSecrets = new Set<string>();

let loadedContract: ReturnType<typeof loadContract> | undefined;
const contract = () => (loadedContract ??= loadContract());

/** The environment a user would set to point the service at the emulator. */
export function emulatorEnvironment(emulator: Emulator): Environment {
  return {
    AZURE_TENANT_ID: emulator.tenant.id,
    AZURE_CLIENT_ID: emulator.api.clientId,
    AZURE_CLIENT_SECRET: emulator.api.clientSecret,
    AZURE_AUTHORITY_HOST: emulator.authorityHost,
    GRAPH_BASE_URL: emulator.graphBaseUrl,
    LOG_LEVEL: 'debug',
  };
}

/**
 * Assembles the real service (real msal-node, jose, ioredis) from a configuration, exactly as
 * the entry point does, and serves it on a free loopback port.
 */
export async function startService(
  emulator: Emulator,
  env: Environment = {},
  deps: Omit<AppDependencies, 'logDestination'> = {},
): Promise<TestService> {
  const config = loadConfig({ ...emulatorEnvironment(emulator), ...env });
  if (config.credential.kind === 'secret') configuredSecrets.add(config.credential.secret);
  const redis = config.cache.redis;
  const redisPassword = redis && 'url' in redis ? decodeURIComponent(new URL(redis.url).password) : redis?.password;
  if (redisPassword) configuredSecrets.add(redisPassword);
  if (config.cache.encryption !== 'off') for (const { key } of config.cache.encryption) configuredSecrets.add(key.toString('base64'));
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const line = chunk.toString('utf8');
      logs.push(line);
      allServiceLogs.push(line);
      done();
    },
  });
  const service = createApp(config, { ...deps, logDestination: sink });
  // Every response, whatever client asked, is held to openapi/openapi.yaml (test/support/openapi-contract.ts).
  const contractViolations: string[] = [];
  service.app.middleware.unshift(contractGuard(contract(), contractViolations));
  const server = createServer(service.callback());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    service,
    config,
    server,
    baseUrl: `http://127.0.0.1:${port}`,
    request: contractCheckedAgent(supertest(server)),
    logs,
    contractViolations,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await service.close();
    },
  };
}
