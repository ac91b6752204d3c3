import type { Registry } from 'prom-client';

/**
 * Reads Prometheus text exposition (what `GET /metrics` answers) in tests.
 *
 *   sample(text, 'obo_cache_hits_total', { level: 'l1' })   // 3, or undefined when absent
 *
 * Labels match as a subset: `{}` takes the first sample of that name.
 */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = new Map<string, string>();
    for (const label of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) found.set(label[1] ?? '', label[2] ?? '');
    if (Object.entries(labels).every(([key, value]) => found.get(key) === value)) return Number(match[3]);
  }
  return undefined;
}

/** The metric families (`# TYPE` lines) in the text, by name. */
export function families(text: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(match[1] ?? '', match[2] ?? '');
  return types;
}

/** The text a running service answers on `GET /metrics` (over a real connection). */
export async function metricsText(api: { baseUrl: string }): Promise<string> {
  const response = await fetch(`${api.baseUrl}/metrics`);
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`);
  return response.text();
}

/** One sample of a running service's `/metrics`, as `sample()` reads it. */
export async function metric(api: { baseUrl: string }, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  return sample(await metricsText(api), name, labels);
}

/** One value in a prom-client registry (no HTTP): the first series whose labels include `labels`, else 0. */
export async function registryMetric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = await registry.getSingleMetric(name)?.get();
  const value = found?.values.find((v) => Object.entries(labels).every(([key, label]) => v.labels[key] === label));
  return value?.value ?? 0;
}
