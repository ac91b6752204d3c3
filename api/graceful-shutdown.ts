import type { Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';

export interface GracefulShutdownOptions {
  /** How long the server keeps serving after the first signal, readiness failing (SHUTDOWN_DRAIN_MS). */
  drainMs: number;
  /** Then, how long in-flight requests may take (SHUTDOWN_TIMEOUT_MS). */
  timeoutMs: number;
  logger: Logger;
  /** Called at the first signal: from then on readiness must fail, so load balancers take the instance out. */
  beginDrain(): void;
  /** Releases what the service holds (Redis, pools, exporters) once no request needs it. */
  release(): Promise<void>;
}

/**
 * Watches a server's requests so that `stop()` can end it cleanly. First it drains: readiness
 * fails at once, but for `drainMs` the server goes on accepting and serving, since a load
 * balancer keeps sending until its probe sees the failure; every response now closes its
 * connection, so keep-alive clients move away without a reset. A second call ends the drain
 * early. Then it stops accepting connections, lets every request in flight finish, releases the
 * service's resources, and says whether that all fitted in `timeoutMs`: requests still running
 * at that deadline are cut off. Resolves with the exit code: 0 clean, 1 cut off.
 */
export function gracefulShutdown(server: Server, options: GracefulShutdownOptions): (signal: string) => Promise<number> {
  const inFlight = new Set<ServerResponse>();
  let stopping: Promise<number> | undefined;
  let endDrain: ((signal: string) => void) | undefined;

  server.on('request', (_request, response: ServerResponse) => {
    // Any request from here on is the last on its connection.
    if (stopping) response.setHeader('connection', 'close');
    inFlight.add(response);
    response.once('close', () => inFlight.delete(response));
  });

  function drain(signal: string): Promise<void> {
    const { logger, drainMs } = options;
    logger.info({ signal, drainMs }, 'draining: /readyz answers 503; still serving, and every response closes its connection');
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, drainMs);
      endDrain = (second) => {
        logger.info({ signal: second }, 'second signal: ending the drain early');
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => (endDrain = undefined));
  }

  async function stop(signal: string): Promise<number> {
    const { logger } = options;
    options.beginDrain();
    for (const response of inFlight) if (!response.headersSent) response.setHeader('connection', 'close');
    if (options.drainMs > 0) await drain(signal);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
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

  return (signal) => {
    if (stopping) {
      endDrain?.(signal);
      return stopping;
    }
    return (stopping = stop(signal));
  };
}
