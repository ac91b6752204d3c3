import { createServer } from 'node:http';
import { createApp } from './app.js';
import { ConfigError, environmentWithDotenv, loadConfig, type Config } from './config.js';

/** The process entry: configuration, the service, an HTTP server, and a clean stop on signals. */
function readConfig(): Config {
  try {
    return loadConfig(environmentWithDotenv(process.env));
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\nSee .env.example and README.md for every variable.\n`);
      process.exit(1);
    }
    throw error;
  }
}

const config = readConfig();
const service = createApp(config);
const server = createServer(service.callback());
// Longer than a load balancer's idle timeout, so it never reuses a socket we are closing.
server.keepAliveTimeout = 65_000;
server.listen(config.port, () => {
  service.logger.info({ port: config.port, tenant: config.tenant.id, authorityHost: config.authorityHost }, 'listening');
});

let stopping = false;
function stop(signal: string): void {
  if (stopping) return;
  stopping = true;
  service.logger.info({ signal }, 'stopping');
  server.close(() => {
    service.close().finally(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(1), 10_000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
