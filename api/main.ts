import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './app.js';
import { ConfigError, environmentWithDotenv, loadConfig, type Config } from './config/load-config.js';
import { gracefulShutdown } from './graceful-shutdown.js';

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
// From the first signal on, /readyz answers 503 while the server drains (graceful-shutdown.ts).
let draining = false;
const service = createApp(config, { draining: () => draining });
const server = createServer(service.callback());
// Longer than a load balancer's idle timeout, so it never reuses a socket we are closing.
server.keepAliveTimeout = 65_000;
server.listen(config.port, () => {
  const { port } = server.address() as AddressInfo;
  service.logger.info({ port, tenant: config.tenant.id, authorityHost: config.authorityHost }, 'listening');
});

const stop = gracefulShutdown(server, {
  drainMs: config.shutdownDrainMs,
  timeoutMs: config.shutdownTimeoutMs,
  logger: service.logger,
  beginDrain: () => {
    draining = true;
  },
  release: () => service.close(),
});
let signalled = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    const stopped = stop(signal);
    // A second signal only ends the drain early (inside stop); the rest is set up once.
    if (signalled) return;
    signalled = true;
    // Whatever hangs, the process is gone soon after the deadline.
    setTimeout(() => process.exit(1), config.shutdownDrainMs + config.shutdownTimeoutMs + 5_000).unref();
    void stopped.then((code) => {
      // Everything is closed, so the process ends by itself; the timer only catches a straggler.
      process.exitCode = code;
      setTimeout(() => {
        service.logger.warn('something still holds the event loop after stopping; exiting anyway');
        process.exit(code);
      }, 1_000).unref();
    });
  });
}
