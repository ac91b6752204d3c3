import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { ConfigError, loadConfig, type Environment } from '../../api/config/load-config.js';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const CLIENT = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
const base: Environment = { AZURE_TENANT_ID: TENANT, AZURE_CLIENT_ID: CLIENT, AZURE_CLIENT_SECRET: 's3cr3t-value' };
const key = () => randomBytes(32).toString('base64');

function problemsOf(env: Environment): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  expect.fail('expected a ConfigError');
}

describe('configuration', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig(base);
    expect(config.port).to.equal(3000);
    expect(config.authorityHost).to.equal('https://login.microsoftonline.com');
    expect(config.audiences).to.deep.equal([CLIENT, `api://${CLIENT}`]);
    expect(config.requiredScopes).to.deep.equal(['access_as_user']);
    expect(config.allowedTenants).to.deep.equal([]);
    expect(config.graph).to.deep.equal({
      name: 'graph',
      baseUrl: 'https://graph.microsoft.com',
      scopes: ['https://graph.microsoft.com/.default'],
      timeoutMs: 30_000,
      allowedPaths: ['/v1.0/me', '/v1.0/me/**', '/beta/me/**'],
      allowedMethods: ['GET'],
      batch: true,
      maxRetries: 2,
      maxRetryWaitMs: 10_000,
    });
    expect(config.downstreams).to.deep.equal({ graph: config.graph });
    expect(config.tenant).to.deep.equal({ id: TENANT, multiTenant: false });
    expect(config.cache.redis).to.equal(undefined);
    expect(config.cache.l1MaxBytes).to.equal(64 * 1024 * 1024);
    expect(config.cache.l2TimeoutMs).to.equal(100);
    expect(config.credential).to.deep.equal({ kind: 'secret', secret: 's3cr3t-value' });
  });

  it('recognises multi-tenant authorities and lists', () => {
    const config = loadConfig({
      ...base,
      AZURE_TENANT_ID: 'organizations',
      API_ALLOWED_TENANTS: `${TENANT.toUpperCase()}, 9188040d-6c67-4c5b-b112-36a304b66dad`,
      API_AUDIENCES: 'api://my-api,  other',
      GRAPH_SCOPES: 'User.Read Mail.Read',
      AZURE_AUTHORITY_HOST: 'https://login.microsoftonline.us/',
    });
    expect(config.tenant.multiTenant).to.equal(true);
    expect(config.allowedTenants).to.deep.equal([TENANT, '9188040d-6c67-4c5b-b112-36a304b66dad']);
    expect(config.audiences).to.deep.equal(['api://my-api', 'other']);
    expect(config.graph.scopes).to.deep.equal(['User.Read', 'Mail.Read']);
    expect(config.authorityHost).to.equal('https://login.microsoftonline.us');
  });

  it('names every bad variable at once', () => {
    const problems = problemsOf({ PORT: 'eighty', AZURE_AUTHORITY_HOST: 'http://login.example', LOG_LEVEL: 'loud' });
    const named = problems.map((p) => p.split(':')[0]);
    expect(named).to.include.members(['AZURE_TENANT_ID', 'AZURE_CLIENT_ID', 'AZURE_CLIENT_SECRET', 'PORT', 'AZURE_AUTHORITY_HOST', 'LOG_LEVEL']);
  });

  it('requires exactly one credential and never echoes a secret', () => {
    const problems = problemsOf({ ...base, AZURE_FEDERATED_TOKEN_FILE: '/nonexistent' });
    expect(problems.join('\n')).to.match(/AZURE_CLIENT_SECRET: exactly one credential/);
    expect(problems.join('\n')).not.to.include('s3cr3t-value');
  });

  it('checks that a federated token file and a certificate can be read', () => {
    const { AZURE_CLIENT_SECRET: _, ...noSecret } = base;
    expect(problemsOf({ ...noSecret, AZURE_FEDERATED_TOKEN_FILE: '/nonexistent/token' })[0]).to.match(/^AZURE_FEDERATED_TOKEN_FILE: cannot read/);
    const dir = mkdtempSync(join(tmpdir(), 'obo-config-'));
    writeFileSync(join(dir, 'not-a-cert.pem'), 'hello');
    expect(problemsOf({ ...noSecret, AZURE_CLIENT_CERTIFICATE_PATH: join(dir, 'not-a-cert.pem') })[0]).to.match(
      /^AZURE_CLIENT_CERTIFICATE_PATH: expected a PEM file/,
    );
  });

  it('requires encryption keys with Redis unless encryption is switched off explicitly', () => {
    const redisUrl = 'redis://:hunter2@localhost:6379';
    const problems = problemsOf({ ...base, REDIS_URL: redisUrl });
    expect(problems).to.have.length(1);
    expect(problems[0]).to.match(/^CACHE_ENCRYPTION_KEYS: required when Redis is configured/);
    expect(loadConfig({ ...base, REDIS_URL: redisUrl, CACHE_ENCRYPTION: 'off' }).cache.encryption).to.equal('off');
    const keys = loadConfig({ ...base, REDIS_URL: redisUrl, CACHE_ENCRYPTION_KEYS: `k2:${key()},k1:${key()}` }).cache.encryption;
    expect(keys).to.be.an('array').with.length(2);
  });

  it('rejects bad Redis settings without echoing the password', () => {
    const problems = problemsOf({ ...base, REDIS_URL: 'http://user:hunter2@host', CACHE_ENCRYPTION: 'off' });
    expect(problems[0]).to.match(/^REDIS_URL: expected redis:/);
    expect(problems.join('\n')).not.to.include('hunter2');
    const both = problemsOf({ ...base, REDIS_URL: 'redis://h:1', REDIS_CLUSTER_NODES: 'a:1', CACHE_ENCRYPTION: 'off' });
    expect(both[0]).to.match(/^REDIS_CLUSTER_NODES: set either/);
    expect(problemsOf({ ...base, CACHE_ENCRYPTION_KEYS: 'k1:c2hvcnQ=' })[0]).to.match(/^CACHE_ENCRYPTION_KEYS:/);
  });

  it('reads cluster nodes as host:port, [ipv6]:port or redis(s) URLs carrying the credentials and TLS of the whole cluster', () => {
    const cluster = (nodes: string) => loadConfig({ ...base, REDIS_CLUSTER_NODES: nodes, CACHE_ENCRYPTION: 'off' }).cache.redis;
    expect(cluster('10.0.0.1:6379, [::1]:7000')).to.deep.equal({ clusterNodes: ['10.0.0.1:6379', '[::1]:7000'] });
    expect(cluster('rediss://app:p%40ss@node-1:6380,node-2:6380,rediss://app:p%40ss@[fd00::2]')).to.deep.equal({
      clusterNodes: ['node-1:6380', 'node-2:6380', '[fd00::2]:6379'],
      username: 'app',
      password: 'p@ss',
      tls: true,
    });
    const nodes = 'node-1,redis://:hunter2@h:1/3,redis://:hunter2@h:1,rediss://:hunter3@h:2';
    const bad = problemsOf({ ...base, REDIS_CLUSTER_NODES: nodes, CACHE_ENCRYPTION: 'off' });
    expect(bad).to.deep.equal([
      'REDIS_CLUSTER_NODES: entry 1: expected host:port, [ipv6]:port or redis[s]://[user:password@]host[:port]',
      'REDIS_CLUSTER_NODES: entry 2: expected host:port, [ipv6]:port or redis[s]://[user:password@]host[:port]',
      'REDIS_CLUSTER_NODES: entry 4: every redis:// or rediss:// entry must give the same scheme, user and password',
    ]);
  });

  describe('URLs that take no credentials (issue 10.9)', () => {
    const PASSWORD = 'pw-7Hq2-not-for-logs';
    const variables = ['AZURE_AUTHORITY_HOST', 'GRAPH_BASE_URL', 'PUBLIC_BASE_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT'];
    const downstream = (baseUrl: string) => JSON.stringify({ contoso: { baseUrl, scopes: ['api://contoso/.default'], allowedPaths: ['/**'] } });

    it('refuses a user or a password, even a password alone, and never prints either', () => {
      for (const userinfo of [`u:${PASSWORD}`, `:${PASSWORD}`, PASSWORD]) {
        for (const name of variables) {
          const problems = problemsOf({ ...base, [name]: `https://${userinfo}@collector.example.com/path` });
          expect(problems, `${name} with ${userinfo}`).to.have.length(1);
          expect(problems[0]).to.match(new RegExp(`^${name}: this URL takes no user or password, got "https://…@collector.example.com/path"$`));
        }
        const problems = problemsOf({ ...base, DOWNSTREAM_APIS: downstream(`https://${userinfo}@api.contoso.com`) });
        expect(problems).to.deep.equal(['DOWNSTREAM_APIS: "contoso".baseUrl: this URL takes no user or password, got "https://…@api.contoso.com/"']);
      }
    });

    it('never prints the userinfo of a URL in any message, whichever variable it is in and whether or not it parses', () => {
      const url = `https://u:${PASSWORD}@collector`;
      const problems = problemsOf({
        ...base,
        OTEL_EXPORTER_OTLP_ENDPOINT: `${url}?x=1`,
        GRAPH_BASE_URL: `ftp://u:${PASSWORD}@graph`,
        PUBLIC_BASE_URL: `https://u:${PASSWORD}@bad host`,
        PORT: url,
        LOG_LEVEL: url,
        AZURE_TENANT_ID: url,
        API_ALLOWED_TENANTS: url,
        CORS_ALLOWED_ORIGINS: url,
        GRAPH_ALLOWED_PATHS: url,
        GRAPH_ALLOWED_METHODS: url,
        AZURE_FEDERATED_TOKEN_FILE: `/no/such/${url}`,
        AZURE_CLIENT_SECRET: undefined,
        DOWNSTREAM_APIS: JSON.stringify({ [url]: { baseUrl: url, scopes: [`${url} x`], allowedPaths: [url], allowedMethods: [url], [url]: 1 } }),
      });
      expect(problems.length).to.be.greaterThan(12);
      for (const problem of problems) expect(problem).not.to.include(PASSWORD);
      expect(problems.filter((problem) => problem.includes('…@'))).to.have.length.greaterThan(10);
    });

    it('keeps taking a password in Redis URLs, without printing it', () => {
      const config = loadConfig({ ...base, REDIS_URL: `rediss://:${PASSWORD}@cache.example.com:6380`, CACHE_ENCRYPTION: 'off' });
      expect(config.cache.redis).to.deep.equal({ url: `rediss://:${PASSWORD}@cache.example.com:6380` });
      const problems = problemsOf({ ...base, REDIS_URL: `https://:${PASSWORD}@cache`, CACHE_ENCRYPTION: 'off' });
      expect(problems).to.deep.equal(['REDIS_URL: expected redis://[user:password@]host[:port][/db] or rediss://…']);
    });
  });

  it('gives JWKS_COOLDOWN_MS a floor of one second (issue 10.12)', () => {
    expect(loadConfig(base).jwksCooldownMs).to.equal(30_000);
    expect(loadConfig({ ...base, JWKS_COOLDOWN_MS: '1000' }).jwksCooldownMs).to.equal(1000);
    for (const value of ['0', '999']) {
      expect(problemsOf({ ...base, JWKS_COOLDOWN_MS: value })).to.deep.equal([
        `JWKS_COOLDOWN_MS: expected a whole number from 1000 to 3600000 (below 1 s, every token naming an unknown kid would be a JWKS fetch), got "${value}"`,
      ]);
    }
  });

  it('reads TOKEN_VALIDATION_CACHE_MAX_BYTES: 16 MiB by default, 0 = off, at most 1 GiB', () => {
    expect(loadConfig(base).tokenValidationCacheMaxBytes).to.equal(48 * 1024 * 1024);
    expect(loadConfig({ ...base, TOKEN_VALIDATION_CACHE_MAX_BYTES: '0' }).tokenValidationCacheMaxBytes).to.equal(0);
    expect(loadConfig({ ...base, TOKEN_VALIDATION_CACHE_MAX_BYTES: '1073741824' }).tokenValidationCacheMaxBytes).to.equal(1024 ** 3);
    for (const value of ['1073741825', '-1', '16MiB', '1e6']) {
      expect(problemsOf({ ...base, TOKEN_VALIDATION_CACHE_MAX_BYTES: value })[0]).to.match(
        /^TOKEN_VALIDATION_CACHE_MAX_BYTES: expected a whole number from 0 to 1073741824/,
      );
    }
  });

  it('reads the standard OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, defaulting to a 10 % trace-id ratio (issue 10.11)', () => {
    expect(loadConfig(base).observability.sampler).to.deep.equal({ name: 'traceidratio', ratio: 0.1 });
    const samplers = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'];
    for (const name of samplers) {
      expect(loadConfig({ ...base, OTEL_TRACES_SAMPLER: name.toUpperCase(), OTEL_TRACES_SAMPLER_ARG: '0.5' }).observability.sampler).to.deep.equal({
        name,
        ratio: 0.5,
      });
    }
    for (const [arg, ratio] of [
      ['0', 0],
      ['1', 1],
      ['1.0', 1],
      ['.25', 0.25],
      ['0.001', 0.001],
    ] as const) {
      expect(loadConfig({ ...base, OTEL_TRACES_SAMPLER_ARG: arg }).observability.sampler.ratio).to.equal(ratio);
    }
    for (const name of ['jaeger_remote', 'parentbased', 'xray', 'on']) {
      expect(problemsOf({ ...base, OTEL_TRACES_SAMPLER: name })).to.deep.equal([
        `OTEL_TRACES_SAMPLER: expected one of ${samplers.join(', ')}, got "${name}"`,
      ]);
    }
    for (const arg of ['1.5', '-0.1', 'abc', 'NaN', 'Infinity', '1e-2', '0x1', '10%']) {
      expect(problemsOf({ ...base, OTEL_TRACES_SAMPLER_ARG: arg }), arg).to.deep.equal([
        `OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1 (for example 0.1), got "${arg}"`,
      ]);
    }
  });

  it('validates Graph from the GRAPH_* variables as strictly as a DOWNSTREAM_APIS entry', () => {
    const entry = (fields: object) =>
      JSON.stringify({ other: { baseUrl: 'https://api.contoso.com', scopes: ['s'], allowedPaths: ['/**'], ...fields } });
    const cases: [Environment, Environment, RegExp][] = [
      [{ GRAPH_ALLOWED_PATHS: ' , ' }, { DOWNSTREAM_APIS: entry({ allowedPaths: [] }) }, /allowedPaths|GRAPH_ALLOWED_PATHS/],
      [{ GRAPH_SCOPES: ' , ' }, { DOWNSTREAM_APIS: entry({ scopes: [] }) }, /scopes|GRAPH_SCOPES/],
      [
        { GRAPH_ALLOWED_METHODS: 'get,trace' },
        { DOWNSTREAM_APIS: entry({ allowedMethods: ['get', 'trace'] }) },
        /"trace" is not one of GET, HEAD, POST, PUT, PATCH, DELETE$/,
      ],
      [{ GRAPH_TIMEOUT_MS: '0' }, { DOWNSTREAM_APIS: entry({ timeoutMs: 0 }) }, /expected a whole number from 1 to 600000/],
      [{ GRAPH_MAX_RETRIES: '11' }, { DOWNSTREAM_APIS: entry({ maxRetries: 11 }) }, /expected a whole number from 0 to 10/],
      [
        { GRAPH_BASE_URL: 'https://graph.example.com/#x' },
        { DOWNSTREAM_APIS: entry({ baseUrl: 'https://api.contoso.com/#x' }) },
        /no user, password, query or fragment/,
      ],
    ];
    for (const [graphEnv, entryEnv, pattern] of cases) {
      const fromGraph = problemsOf({ ...base, ...graphEnv });
      const fromEntry = problemsOf({ ...base, ...entryEnv });
      expect(fromGraph, JSON.stringify(graphEnv)).to.have.length(1);
      expect(fromEntry, JSON.stringify(entryEnv)).to.have.length(1);
      expect(fromGraph[0])
        .to.match(/^GRAPH_[A-Z_]+: /)
        .and.match(pattern);
      expect(fromEntry[0])
        .to.match(/^DOWNSTREAM_APIS: "other"\.[a-zA-Z]+: /)
        .and.match(pattern);
      // The same check says the same thing, whichever source it reads.
      expect(
        fromGraph[0]
          ?.replace(/^GRAPH_[A-Z_]+: /, '')
          .replace(/, got \d+$/, '')
          .replace(/, got ".*"$/, ''),
      ).to.equal(fromEntry[0]?.replace(/^DOWNSTREAM_APIS: "other"\.[a-zA-Z]+: /, '').replace(/, got ".*"$/, ''));
    }
  });

  it('stops the real entry point with one clear message, no stack trace and no secret', async () => {
    const run = promisify(execFile);
    const env = { PATH: process.env['PATH'] ?? '', AZURE_CLIENT_SECRET: 'do-not-print-me', AZURE_TENANT_ID: 'not a tenant', PORT: '-1' };
    const failure = await run(process.execPath, ['--import', 'tsx', 'api/main.ts'], { env, cwd: process.cwd() }).then(
      () => expect.fail('the service started with a bad configuration'),
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure.code).to.equal(1);
    expect(failure.stderr).to.match(/^Invalid configuration:/);
    expect(failure.stderr).to.include('AZURE_TENANT_ID').and.include('AZURE_CLIENT_ID').and.include('PORT');
    expect(failure.stderr).not.to.include('do-not-print-me');
    expect(failure.stderr).not.to.match(/\n\s+at /);
  });
});
