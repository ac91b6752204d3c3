import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { downstreamEntrySchema, downstreamSchema, fieldProblems, type DownstreamConfig } from './downstream-schema.js';
import type { EnvReader } from './env-reader.js';
import { shown } from './shown.js';

export interface Downstreams {
  /** Microsoft Graph: also `downstreams.graph`. */
  graph: DownstreamConfig;
  /** Every proxied downstream by name (`/api/downstream/<name>/…`): Graph plus DOWNSTREAM_APIS. */
  downstreams: Record<string, DownstreamConfig>;
}

/** Graph as the GRAPH_* variables describe it when none is set. */
const GRAPH_DEFAULTS: DownstreamConfig = {
  name: 'graph',
  baseUrl: 'https://graph.microsoft.com',
  scopes: ['https://graph.microsoft.com/.default'],
  timeoutMs: 30_000,
  allowedPaths: ['/v1.0/me', '/v1.0/me/**', '/beta/me/**'],
  allowedMethods: ['GET'],
  batch: true,
  maxRetries: 2,
  maxRetryWaitMs: 10_000,
};

/** The variable that sets each field of Graph's entry. */
const GRAPH_VARIABLES = new Map<string | undefined, string>([
  ['baseUrl', 'GRAPH_BASE_URL'],
  ['scopes', 'GRAPH_SCOPES'],
  ['timeoutMs', 'GRAPH_TIMEOUT_MS'],
  ['allowedPaths', 'GRAPH_ALLOWED_PATHS'],
  ['allowedMethods', 'GRAPH_ALLOWED_METHODS'],
  ['maxRetries', 'GRAPH_MAX_RETRIES'],
  ['maxRetryWaitMs', 'GRAPH_MAX_RETRY_WAIT_MS'],
]);

/** Graph from the GRAPH_* variables, and the other downstreams from DOWNSTREAM_APIS: one schema for both. */
export function readDownstreams(read: EnvReader): Downstreams {
  const graph = readGraph(read);
  return { graph, downstreams: { graph, ...readDownstreamApis(read, graph) } };
}

function readGraph(read: EnvReader): DownstreamConfig {
  const given = {
    name: 'graph',
    baseUrl: read.optional('GRAPH_BASE_URL') ?? GRAPH_DEFAULTS.baseUrl,
    scopes: read.list('GRAPH_SCOPES', /[\s,]+/) ?? GRAPH_DEFAULTS.scopes,
    timeoutMs: read.wholeNumber('GRAPH_TIMEOUT_MS') ?? GRAPH_DEFAULTS.timeoutMs,
    allowedPaths: read.list('GRAPH_ALLOWED_PATHS') ?? GRAPH_DEFAULTS.allowedPaths,
    allowedMethods: read.list('GRAPH_ALLOWED_METHODS') ?? GRAPH_DEFAULTS.allowedMethods,
    batch: true,
    maxRetries: read.wholeNumber('GRAPH_MAX_RETRIES') ?? GRAPH_DEFAULTS.maxRetries,
    maxRetryWaitMs: read.wholeNumber('GRAPH_MAX_RETRY_WAIT_MS') ?? GRAPH_DEFAULTS.maxRetryWaitMs,
  };
  const parsed = downstreamSchema.safeParse(given);
  if (parsed.success) return parsed.data;
  for (const { field, message } of fieldProblems(parsed.error, [])) {
    const variable = GRAPH_VARIABLES.get(field) ?? 'GRAPH_*';
    const value: unknown = Object.entries(given).find(([name]) => name === field)?.[1];
    read.problem(variable, typeof value === 'number' ? `${message}, got ${value}` : message);
  }
  return GRAPH_DEFAULTS;
}

const NAME = 'DOWNSTREAM_APIS';
const apisSchema = z.record(z.string(), z.unknown(), { error: 'expected a JSON object whose members are the named downstream APIs' });
const ENTRY_FIELDS = Object.keys(downstreamEntrySchema.shape);

/**
 * DOWNSTREAM_APIS: inline JSON, or the path of a JSON file, `{ "<name>": { baseUrl, scopes,
 * allowedPaths, allowedMethods?, batch?, timeoutMs?, maxRetries?, token? } }`. Every problem names the
 * entry and field; the entries returned mean something only when none was reported.
 */
function readDownstreamApis(read: EnvReader, graph: DownstreamConfig): Record<string, DownstreamConfig> {
  const value = read.optional(NAME);
  if (value === undefined) return {};
  const text = /^[[{]/.test(value) ? value : readFile(read, value);
  if (text === undefined) return {};
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    read.problem(
      NAME,
      'expected a JSON object { "<name>": { "baseUrl": …, "scopes": […], "allowedPaths": […] } } (or the path of a file holding one); the JSON does not parse',
    );
    return {};
  }
  const apis = apisSchema.safeParse(json);
  if (!apis.success) {
    read.problem(NAME, apis.error.issues[0]?.message ?? 'expected a JSON object');
    return {};
  }
  const downstreams: Record<string, DownstreamConfig> = {};
  const multiTenant = /^(organizations|common)$/i.exec(read.optional('AZURE_TENANT_ID') ?? '')?.[0];
  for (const [name, entry] of Object.entries(apis.data)) {
    const where = `"${shown(name)}"`;
    const named = downstreamSchema.shape.name.safeParse(name);
    const taken = name.toLowerCase() === 'graph';
    if (!named.success) read.problem(NAME, `${where}: ${named.error.issues[0]?.message ?? 'invalid name'}`);
    else if (taken) read.problem(NAME, `${where}: the name graph is taken by Microsoft Graph (configure it with the GRAPH_* variables)`);
    const parsed = downstreamEntrySchema.safeParse(entry);
    if (!parsed.success) {
      for (const { field, message } of fieldProblems(parsed.error, ENTRY_FIELDS)) {
        read.problem(
          NAME,
          field === undefined ? `${where}: expected an object with baseUrl, scopes and allowedPaths` : `${where}.${shown(field)}: ${message}`,
        );
      }
    } else if (named.success && !taken) {
      if (parsed.data.token === 'app' && multiTenant) {
        read.problem(
          NAME,
          `${where}.token: app tokens come from the API's home tenant: set AZURE_TENANT_ID to a tenant id or domain, not ${multiTenant}`,
        );
      }
      const { timeoutMs = graph.timeoutMs, maxRetries = graph.maxRetries, ...fields } = parsed.data;
      downstreams[name] = { name, ...fields, timeoutMs, maxRetries, maxRetryWaitMs: graph.maxRetryWaitMs };
    }
  }
  return downstreams;
}

function readFile(read: EnvReader, path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    read.problem(NAME, `expected inline JSON (starting with {) or a readable file; cannot read the file "${shown(path)}"`);
    return undefined;
  }
}
