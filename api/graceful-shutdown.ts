import type { Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';

export interface GracefulShutdownOptions {
  /** How long in-flight requests may take (SHUTDOWN_TIMEOUT_MS). */
  timeoutMs: number;
  logger: Logger;
  /** Releases what the service holds (Redis, pools, exporters) once no request needs it. */
  release(): Promise<void>;
}

/**
 * Watches a server's requests so that `stop()` can end it cleanly: stop accepting connections,
 * let every request in flight finish (its connection then closes instead of idling), release
 * the service's resources, and say whether that all fitted in the time allowed. Requests still
 * running at the deadline are cut off. Resolves with the exit code: 0 clean, 1 cut off.
 */
export function gracefulShutdown(server: Server, options: GracefulShutdownOptions): (signal: string) => Promise<number> {
  const inFlight = new Set<ServerResponse>();
  let stopping: Promise<number> | undefined;

  server.on('request', (_request, response: ServerResponse) => {
    // Any request from here on is the last on its connection.
    if (stopping) response.setHeader('connection', 'close');
    inFlight.add(response);
    response.once('close', () => inFlight.delete(response));
  });

  async function stop(signal: string): Promise<number> {
    const { logger } = options;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    for (const response of inFlight) if (!response.headersSent) response.setHeader('connection', 'close');
    logger.info({ signal, inFlight: inFlight.size, timeoutMs: options.timeoutMs }, 'stopping: no new connections; finishing requests in flight');
    let cutOff = false;
    const deadline = setTimeout(() => {
      cutOff = true;
      logger.error({ inFlight: inFlight.size }, 'shutdown timeout: cutting off the requests still in flight');
      server.closeAllConnections();
    }, options.timeoutMs);
    await closed;
    clearTimeout(deadline);
    await options.release().catch((error: unknown) => logger.error({ err: error }, 'releasing resources failed'));
    logger.info({ cutOff }, 'stopped');
    return cutOff ? 1 : 0;
  }

  return (signal) => (stopping ??= stop(signal));
}
