import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import type { Environment } from './env-reader.js';

/**
 * Reads `.env` (when present) under the real environment: a variable set in the
 * environment wins over the file.
 */
export function environmentWithDotenv(env: Environment, dotenvPath = '.env'): Environment {
  let text: string;
  try {
    text = readFileSync(dotenvPath, 'utf8');
  } catch {
    return env;
  }
  return { ...parseEnv(text), ...env };
}
