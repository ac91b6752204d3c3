import { expect } from 'chai';
import fc from 'fast-check';
import { ConfigError, loadConfig, type Config, type Environment } from '../../api/config/load-config.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 200);

/** A value that is secret, and so must never appear in a problem message: distinctive enough not to occur by chance. */
const secret = fc.stringMatching(/^[A-Za-z0-9]{4,24}$/).map((tail) => `sk${tail}Q`);

interface Case {
  env: Environment;
  secrets: string[];
}

const base: Environment = {
  AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
  AZURE_CLIENT_ID: '6e74172b-be56-4843-9ff4-e66a39bb12e3',
};

/** Hosts, paths and schemes a URL is built from; unicode and IPv6 included. */
const host = fc.constantFrom('collector', 'login.example.com', '127.0.0.1:4318', '[::1]:443', 'bücher.example', 'h', '', 'a b', '%zz');
const path = fc.oneof(
  fc.constant(''),
  fc.constant('/'),
  fc.webPath(),
  fc.string({ unit: 'grapheme', maxLength: 12 }).map((p) => `/${p}`),
);
const scheme = fc.constantFrom('https', 'http', 'redis', 'rediss', 'ftp', 'HTTPS', 'javascript');

/** A URL whose userinfo holds a secret: user:password, :password, or password alone. */
const urlWithSecret = fc
  .tuple(
    scheme,
    fc.constantFrom('u:', ':', '', 'user%40x:'),
    secret,
    fc.constantFrom('@', '@@', '%40@'),
    host,
    path,
    fc.constantFrom('', '?q=1', '#f'),
  )
  .map(([s, user, password, at, h, p, tail]) => ({ value: `${s}://${user}${password}${at}${h}${p}${tail}`, secrets: [password] }));

/** Garbage of every kind a variable could hold, none of it secret. */
const junk = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }).map(String),
  fc.double().map(String),
  fc.constantFrom('', ' ', '0', '-0', '1e309', 'NaN', 'Infinity', '0x10', '9007199254740993', '1.0', '.5', 'on', 'OFF', 'null', '{}', '[]'),
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
);

/** A plausible or broken value for a named variable, with the secrets it holds. */
function valueFor(name: string): fc.Arbitrary<{ value: string | undefined; secrets: string[] }> {
  const plain = (arbitrary: fc.Arbitrary<string | undefined>) => arbitrary.map((value) => ({ value, secrets: [] as string[] }));
  const own = ((): fc.Arbitrary<{ value: string | undefined; secrets: string[] }> => {
    switch (name) {
      case 'AZURE_CLIENT_SECRET':
      case 'METRICS_TOKEN':
      case 'AZURE_CLIENT_CERTIFICATE_PASSWORD':
        return secret.map((value) => ({ value, secrets: [value] }));
      case 'CACHE_ENCRYPTION_KEYS':
        return fc
          .array(fc.tuple(fc.constantFrom('k1', 'k2', 'bad kid', ''), fc.constantFrom(':', '', '::'), fc.uint8Array({ maxLength: 40 })), {
            minLength: 1,
            maxLength: 3,
          })
          .map((keys) => {
            const parts = keys.map(([kid, colon, bytes]) => ({ text: `${kid}${colon}`, key: Buffer.from(bytes).toString('base64') }));
            // The keys are the secret (the key ids are not); very short ones could occur in a message by chance.
            const secrets = parts.map(({ key }) => key).filter((key) => key.length >= 8);
            return { value: parts.map(({ text, key }) => `${text}${key}`).join(','), secrets };
          });
      case 'DOWNSTREAM_APIS':
        return downstreamApis;
      case 'REDIS_URL':
      case 'REDIS_CLUSTER_NODES':
      case 'AZURE_AUTHORITY_HOST':
      case 'GRAPH_BASE_URL':
      case 'PUBLIC_BASE_URL':
      case 'OTEL_EXPORTER_OTLP_ENDPOINT':
      case 'CORS_ALLOWED_ORIGINS':
        return fc.oneof(urlWithSecret, plain(fc.webUrl()), plain(junk));
      case 'OTEL_TRACES_SAMPLER':
        return plain(fc.constantFrom('always_on', 'parentbased_traceidratio', 'TraceIdRatio', 'jaeger_remote', 'xray'));
      case 'CACHE_ENCRYPTION':
        return plain(fc.constantFrom('on', 'off', 'OFF', 'maybe'));
      default:
        return plain(junk);
    }
  })();
  // Any variable may also get a URL with a password, or be unset.
  return fc.oneof({ weight: 6, arbitrary: own }, { weight: 1, arbitrary: urlWithSecret }, { weight: 1, arbitrary: plain(fc.constant(undefined)) });
}

/** DOWNSTREAM_APIS: valid entries, entries mutated field by field, JSON garbage, broken JSON. */
const entry = fc.record(
  {
    baseUrl: fc.oneof(fc.constant('https://api.contoso.com/v2'), fc.webUrl(), fc.jsonValue()),
    scopes: fc.oneof(fc.constant(['api://contoso/.default']), fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }), fc.jsonValue()),
    allowedPaths: fc.oneof(fc.constant(['/orders/**']), fc.array(fc.string({ maxLength: 12 }), { maxLength: 3 }), fc.jsonValue()),
    allowedMethods: fc.oneof(fc.constant(['get']), fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }), fc.jsonValue()),
    batch: fc.oneof(fc.boolean(), fc.jsonValue()),
    timeoutMs: fc.oneof(fc.integer({ min: -10, max: 700_000 }), fc.double(), fc.jsonValue()),
    maxRetries: fc.oneof(fc.integer({ min: -1, max: 12 }), fc.jsonValue()),
    surprise: fc.jsonValue(),
  },
  { requiredKeys: ['baseUrl', 'scopes', 'allowedPaths'] },
);
const downstreamApis: fc.Arbitrary<{ value: string | undefined; secrets: string[] }> = fc.oneof(
  fc
    .tuple(
      fc.dictionary(fc.oneof(fc.constantFrom('contoso', 'graph', 'Graph', 'bad name', '__proto__', 'constructor'), fc.string()), entry, {
        maxKeys: 3,
      }),
      fc.option(urlWithSecret),
    )
    .map(([apis, withSecret]) => {
      const named = withSecret ? { ...apis, leaky: { baseUrl: withSecret.value, scopes: ['s'], allowedPaths: ['/**'] } } : apis;
      return { value: JSON.stringify(named), secrets: withSecret?.secrets ?? [] };
    }),
  fc.jsonValue().map((value) => ({ value: JSON.stringify(value), secrets: [] })),
  fc.string({ maxLength: 30 }).map((text) => ({ value: `{${text}`, secrets: [] })),
  fc.json().map((text) => ({ value: text.slice(0, Math.max(1, text.length - 1)), secrets: [] })),
);

const NAMES = [
  'AZURE_TENANT_ID',
  'AZURE_CLIENT_ID',
  'AZURE_CLIENT_SECRET',
  'AZURE_CLIENT_CERTIFICATE_PATH',
  'AZURE_CLIENT_CERTIFICATE_PASSWORD',
  'AZURE_FEDERATED_TOKEN_FILE',
  'AZURE_AUTHORITY_HOST',
  'API_AUDIENCES',
  'API_REQUIRED_SCOPES',
  'API_ALLOWED_TENANTS',
  'CLOCK_SKEW_SECONDS',
  'JWKS_COOLDOWN_MS',
  'TOKEN_VALIDATION_CACHE_MAX_BYTES',
  'EXCHANGE_TIMEOUT_MS',
  'GRAPH_BASE_URL',
  'GRAPH_SCOPES',
  'GRAPH_TIMEOUT_MS',
  'GRAPH_ALLOWED_PATHS',
  'GRAPH_ALLOWED_METHODS',
  'GRAPH_MAX_RETRIES',
  'GRAPH_MAX_RETRY_WAIT_MS',
  'DOWNSTREAM_APIS',
  'PUBLIC_BASE_URL',
  'REDIS_URL',
  'REDIS_CLUSTER_NODES',
  'CACHE_ENCRYPTION_KEYS',
  'CACHE_ENCRYPTION',
  'CACHE_L1_MAX_BYTES',
  'CACHE_L2_TIMEOUT_MS',
  'CACHE_KEY_PREFIX',
  'PORT',
  'LOG_LEVEL',
  'LOG_USER_IDS',
  'CORS_ALLOWED_ORIGINS',
  'REQUEST_BODY_MAX_BYTES',
  'TRUST_PROXY_HOPS',
  'RATE_LIMIT_PER_MINUTE',
  'RATE_LIMIT_IP_PER_MINUTE',
  'METRICS_TOKEN',
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_SERVICE_NAME',
  'OTEL_TRACES_SAMPLER',
  'OTEL_TRACES_SAMPLER_ARG',
  'SHUTDOWN_TIMEOUT_MS',
];

/** A valid environment (one credential), with a few variables replaced, removed or added. */
const mutatedEnvironment: fc.Arbitrary<Case> = fc
  .tuple(
    secret,
    fc
      .uniqueArray(fc.constantFrom(...NAMES), { maxLength: 6 })
      .chain((names) => fc.tuple(...names.map((name) => valueFor(name).map((v) => [name, v] as const)))),
  )
  .map(([clientSecret, changes]) => {
    const env: Record<string, string | undefined> = { ...base, AZURE_CLIENT_SECRET: clientSecret };
    const secrets = [clientSecret];
    for (const [name, { value, secrets: held }] of changes) {
      env[name] = value;
      secrets.push(...held);
    }
    return { env, secrets };
  });

/** The URLs the service logs or calls: none may carry a user or password. */
function urlsOf(config: Config): string[] {
  return [
    config.authorityHost,
    ...Object.values(config.downstreams).map((downstream) => downstream.baseUrl),
    ...(config.publicBaseUrl ? [config.publicBaseUrl] : []),
    ...(config.observability.otlpEndpoint ? [config.observability.otlpEndpoint] : []),
  ];
}

describe('the environment reader, under generated and mutated environments (property)', () => {
  const outcomes = { configs: 0, refused: 0, problems: 0 };
  after(() =>
    console.log(`      env reader: ${RUNS} cases, ${outcomes.configs} configs, ${outcomes.refused} refused with ${outcomes.problems} problems`),
  );

  it('returns a Config or throws a ConfigError, and no problem quotes a secret or a URL password', () => {
    fc.assert(
      fc.property(mutatedEnvironment, ({ env, secrets }) => {
        let config: Config;
        try {
          config = loadConfig(env);
        } catch (error) {
          expect(error, 'only a ConfigError escapes').to.be.instanceOf(ConfigError);
          const { problems, message } = error as ConfigError;
          expect(problems).to.have.length.greaterThan(0);
          outcomes.refused += 1;
          outcomes.problems += problems.length;
          for (const value of secrets) expect(message, 'a problem message').not.to.include(value);
          return;
        }
        outcomes.configs += 1;
        for (const url of urlsOf(config)) {
          const parsed = new URL(url);
          expect(parsed.username + parsed.password, url).to.equal('');
        }
      }),
      { numRuns: RUNS },
    );
    // Both outcomes, or the generator says little.
    expect(outcomes.configs, 'environments that load').to.be.greaterThan(0);
    expect(outcomes.refused, 'environments refused').to.be.greaterThan(0);
  });
});
