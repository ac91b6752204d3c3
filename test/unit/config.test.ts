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
