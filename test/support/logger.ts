import { pino, type Logger } from 'pino';

/** A debug-level pino logger whose lines (JSON text) a test can read. */
export function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }), lines };
}
