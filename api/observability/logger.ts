import { pino, type DestinationStream, type Logger } from 'pino';

/**
 * Secrets that must never reach a log line, whatever an object carries: credentials in
 * headers (as Node, koa and undici name them), tokens and assertions.
 */
const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  'authorization',
  'cookie',
  '*.authorization',
  '*.cookie',
  '*.accessToken',
  '*.token',
  '*.assertion',
  '*.clientSecret',
];

/** JSON lines at `level` (LOG_LEVEL) to stdout, or to `destination` (tests). */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = { level, redact: { paths: REDACT, censor: '[redacted]' } };
  return destination ? pino(options, destination) : pino(options);
}
