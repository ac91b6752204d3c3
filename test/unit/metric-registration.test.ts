import { expect } from 'chai';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Agent } from 'undici';
import { createDownstreamMetrics } from '../../api/downstream/observer.js';
import { createExchange } from '../../api/token/exchange.js';
import { createExchangeOutcomes } from '../../api/token/exchange-outcomes.js';
import { httpMetrics } from '../../middleware/http-metrics.js';

/** Each metric factory and the metric it registers first. */
function factories(dispatcher: Agent): Array<[string, (registry: Registry) => unknown]> {
  return [
    ['http_requests_total', (registry) => httpMetrics(registry)],
    ['obo_downstream_requests_total', (registry) => createDownstreamMetrics(registry)],
    ['obo_exchanges_total', (registry) => createExchangeOutcomes(registry)],
    [
      'obo_exchange_duration_seconds',
      (registry) =>
        createExchange({
          authorityHost: 'https://login.microsoftonline.com',
          clientId: '00000000-0000-0000-0000-000000000001',
          credential: { kind: 'secret', secret: 'not-used' },
          timeoutMs: 1_000,
          dispatcher,
          logger: pino({ level: 'silent' }),
          registry,
        }),
    ],
  ];
}

describe('metric factories', () => {
  const dispatcher = new Agent();
  after(() => dispatcher.close());

  it('each registers on the registry it is given, and refuses one that already holds its metrics', () => {
    for (const [name, create] of factories(dispatcher)) {
      const registry = new Registry();
      create(registry);
      expect(registry.getSingleMetric(name), name).to.not.equal(undefined);
      expect(() => create(registry), name).to.throw(`this registry already holds ${name}: give each app its own registry`);
      // A registry of its own is fine, however many there are.
      expect(() => create(new Registry()), name).not.to.throw();
    }
  });
});
