import { Counter, type Registry } from 'prom-client';
import type { TokenEndpointRecord } from './token-endpoint-client.js';

export type ExchangeOutcomes = (record: TokenEndpointRecord | 'ok') => void;

// Entra's values become labels: anything unexpected is folded, so a label set stays bounded.
const ERROR = /^[a-z0-9_]{1,64}$/;
const AADSTS = /^\d{4,6}$/;

/**
 * `obo_exchanges_total{outcome, error, aadsts}`: every exchange by what Entra answered, e.g.
 * `{outcome="error", error="interaction_required", aadsts="50076"}` for MFA, or
 * `error="timeout"` when Entra did not answer at all.
 */
export function createExchangeOutcomes(registry: Registry): ExchangeOutcomes {
  const name = 'obo_exchanges_total';
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  const outcomes = new Counter({
    name,
    help: "OBO exchanges with Microsoft Entra ID by outcome, Entra's OAuth error and its first AADSTS code",
    labelNames: ['outcome', 'error', 'aadsts'] as const,
    registers: [registry],
  });
  const ok = outcomes.labels({ outcome: 'ok', error: '', aadsts: '' });
  ok.inc(0);
  return (record) => {
    if (record === 'ok') {
      ok.inc();
      return;
    }
    const error = record.failure ?? record.entraError?.error ?? (record.status !== undefined ? `http_${record.status}` : 'unknown');
    const aadsts = String(record.entraError?.error_codes?.[0] ?? '');
    outcomes.inc({ outcome: 'error', error: ERROR.test(error) ? error : 'other', aadsts: AADSTS.test(aadsts) ? aadsts : '' });
  };
}
