import { shown } from './shown.js';
import { checkBaseUrl } from './urls.js';

export type Environment = Readonly<Record<string, string | undefined>>;

/** Thrown when the environment does not describe a runnable service. Lists every problem. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads variables and collects problems instead of stopping at the first, so one start-up names
 * them all. A problem quotes a value only through `shown` (no URL userinfo); the readers of
 * secrets (credential, tokens, keys, Redis URLs) never quote theirs at all.
 */
export class EnvReader {
  private readonly problems: string[] = [];
  constructor(private readonly env: Environment) {}

  problem(name: string, message: string): void {
    this.problems.push(`${name}: ${message}`);
  }

  optional(name: string): string | undefined {
    const value = this.env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  }

  required(name: string, expected: string, pattern: RegExp): string {
    const value = this.optional(name);
    if (value === undefined) this.problem(name, `required: ${expected}`);
    else if (!pattern.test(value)) this.problem(name, `expected ${expected}, got "${shown(value)}"`);
    return value ?? '';
  }

  list(name: string, separator: RegExp = /\s*,\s*/): string[] | undefined {
    const value = this.optional(name);
    return value === undefined ? undefined : value.split(separator).filter((item) => item !== '');
  }

  /** A whole number in decimal digits, or undefined (unset, or reported); a range is the caller's. */
  wholeNumber(name: string): number | undefined {
    const value = this.optional(name);
    if (value === undefined) return undefined;
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(parsed)) {
      this.problem(name, `expected a whole number, got "${shown(value)}"`);
      return undefined;
    }
    return parsed;
  }

  /** `why` says what a bound is for, when the bound alone would puzzle. */
  integer(name: string, fallback: number, min: number, max: number, why?: string): number {
    const value = this.optional(name);
    if (value === undefined) return fallback;
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      this.problem(name, `expected a whole number from ${min} to ${max}${why ? ` (${why})` : ''}, got "${shown(value)}"`);
      return fallback;
    }
    return parsed;
  }

  /** A decimal fraction from 0 to 1 (`0.25`, `1`, `.5`). */
  ratio(name: string, fallback: number): number {
    const value = this.optional(name);
    if (value === undefined) return fallback;
    const parsed = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(value) ? Number(value) : Number.NaN;
    if (!(parsed >= 0 && parsed <= 1)) {
      this.problem(name, `expected a ratio from 0 to 1 (for example 0.1), got "${shown(value)}"`);
      return fallback;
    }
    return parsed;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const value = this.optional(name)?.toLowerCase();
    if (value === undefined) return fallback;
    const found = allowed.find((item) => item === value);
    if (found === undefined) this.problem(name, `expected one of ${allowed.join(', ')}, got "${shown(value)}"`);
    return found ?? fallback;
  }

  /** A base URL (see checkBaseUrl); `fallback` when unset, and when bad (after reporting it). */
  url(name: string, fallback: string, protocols: readonly string[]): string {
    const value = this.optional(name);
    if (value === undefined) return fallback;
    const checked = checkBaseUrl(value, protocols);
    if ('problem' in checked) {
      this.problem(name, checked.problem);
      return fallback;
    }
    return checked.href;
  }

  /** As `url`, for a variable with no default. */
  optionalUrl(name: string, protocols: readonly string[]): string | undefined {
    return this.optional(name) === undefined ? undefined : this.url(name, '', protocols);
  }

  finish(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}
