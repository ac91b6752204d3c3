/**
 * Parses `Retry-After`: delta-seconds (Graph sends fractional ones, e.g. `2.128`) or an
 * HTTP-date. Returns seconds from now, never negative, or undefined when absent or garbled.
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Number(text);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000);
}
