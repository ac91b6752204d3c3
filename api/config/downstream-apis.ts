import type { DownstreamConfig } from './load-config.js';
import { pathPatternProblem } from '../downstream/path-allow-list.js';

/** Methods a downstream may allow. */
export const PROXY_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/** What an entry of DOWNSTREAM_APIS inherits from the GRAPH_* settings unless it says otherwise. */
export type DownstreamDefaults = Pick<DownstreamConfig, 'timeoutMs' | 'maxRetries' | 'maxRetryWaitMs'>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const KNOWN_FIELDS = new Set(['baseUrl', 'scopes', 'allowedPaths', 'allowedMethods', 'batch', 'timeoutMs', 'maxRetries']);

/**
 * Parses the JSON of DOWNSTREAM_APIS: `{ "<name>": { baseUrl, scopes, allowedPaths, allowedMethods?,
 * batch?, timeoutMs?, maxRetries? } }`. Reports every problem through `problem` (one message each,
 * naming the entry and field); the entries returned are meaningful only when none was reported.
 */
export function parseDownstreamApis(text: string, defaults: DownstreamDefaults, problem: (message: string) => void): DownstreamConfig[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    problem('expected a JSON object { "<name>": { "baseUrl": …, "scopes": […], "allowedPaths": […] } } (or the path of a file holding one); the JSON does not parse');
    return [];
  }
  if (!isObject(parsed)) {
    problem('expected a JSON object whose members are the named downstream APIs');
    return [];
  }
  const downstreams: DownstreamConfig[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    const where = `"${name}"`;
    if (!NAME.test(name)) problem(`${where}: a name is 1-64 letters, digits, - or _, starting with a letter or digit`);
    else if (name.toLowerCase() === 'graph') problem(`${where}: the name graph is taken by Microsoft Graph (configure it with the GRAPH_* variables)`);
    if (!isObject(entry)) {
      problem(`${where}: expected an object with baseUrl, scopes and allowedPaths`);
      continue;
    }
    const report = (message: string) => problem(`${where}.${message}`);
    for (const field of Object.keys(entry)) {
      if (!KNOWN_FIELDS.has(field)) report(`${field}: unknown field (known: ${[...KNOWN_FIELDS].join(', ')})`);
    }
    const baseUrl = readBaseUrl(entry['baseUrl'], report);
    const scopes = readStrings(entry['scopes'], 'scopes', report, (scope) => (/\s/.test(scope) ? `"${scope}" contains whitespace` : undefined));
    const allowedPaths = readStrings(entry['allowedPaths'], 'allowedPaths', report, pathPatternProblem);
    const allowedMethods =
      entry['allowedMethods'] === undefined
        ? ['GET']
        : readStrings(entry['allowedMethods'], 'allowedMethods', report, (method) =>
            (PROXY_METHODS as readonly string[]).includes(method.toUpperCase()) ? undefined : `"${method}" is not one of ${PROXY_METHODS.join(', ')}`,
          )?.map((method) => method.toUpperCase());
    const batch = entry['batch'] ?? false;
    if (typeof batch !== 'boolean') report('batch: expected true or false');
    const timeoutMs = readInteger(entry['timeoutMs'], 'timeoutMs', defaults.timeoutMs, 1, 600_000, report);
    const maxRetries = readInteger(entry['maxRetries'], 'maxRetries', defaults.maxRetries, 0, 10, report);
    if (baseUrl && scopes && allowedPaths && allowedMethods && typeof batch === 'boolean' && timeoutMs !== undefined && maxRetries !== undefined) {
      downstreams.push({ name, baseUrl, scopes, allowedPaths, allowedMethods, batch, timeoutMs, maxRetries, maxRetryWaitMs: defaults.maxRetryWaitMs });
    }
  }
  return downstreams;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readBaseUrl(value: unknown, report: (message: string) => void): string | undefined {
  const url = typeof value === 'string' && URL.canParse(value) ? new URL(value) : undefined;
  if (!url || !['https:', 'http:'].includes(url.protocol) || url.search || url.hash || url.username || url.password) {
    report('baseUrl: expected an https (or http) URL with no query, fragment or credentials');
    return undefined;
  }
  return url.href.replace(/\/+$/, '');
}

function readStrings(
  value: unknown,
  field: string,
  report: (message: string) => void,
  check: (item: string) => string | undefined,
): string[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || !value.every((item): item is string => typeof item === 'string' && item !== '')) {
    report(`${field}: expected a non-empty array of non-empty strings`);
    return undefined;
  }
  const problems = value.map(check).filter((message) => message !== undefined);
  for (const message of problems) report(`${field}: ${message}`);
  return problems.length === 0 ? value : undefined;
}

function readInteger(value: unknown, field: string, fallback: number, min: number, max: number, report: (message: string) => void): number | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    report(`${field}: expected a whole number from ${min} to ${max}`);
    return undefined;
  }
  return value;
}
