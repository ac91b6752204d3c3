import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { expect } from 'chai';
import Koa from 'koa';
import { useEmulator, useService } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { contractGuard, loadContract, VIOLATION_HEADER } from '../support/openapi-contract.js';

const run = promisify(execFile);
const CHROMIUM = '/usr/bin/chromium';

describe('the OpenAPI contract (openapi/openapi.yaml)', () => {
  it('passes redocly lint with no errors and no warnings (redocly.yaml)', async function () {
    this.timeout(60_000);
    const { stdout } = await run('node_modules/.bin/redocly', ['lint', 'openapi/openapi.yaml', '--format=json'], {
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
    }).catch((error: { stdout?: string; stderr?: string }) => {
      throw new Error(`redocly lint failed:\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    });
    const report = JSON.parse(stdout) as {
      totals: { errors: number; warnings: number };
      problems: { message: string; location?: { pointer?: string }[] }[];
    };
    const problems = report.problems.map((problem) => `${problem.location?.[0]?.pointer ?? ''}: ${problem.message}`);
    expect(report.totals, problems.join('\n')).to.deep.include({ errors: 0, warnings: 0 });
  });

  describe('the check every test service applies', () => {
    const contract = loadContract();
    const json = (value: unknown) => Buffer.from(JSON.stringify(value));
    const jsonType = { 'content-type': 'application/json; charset=utf-8' };

    it('accepts documented answers, matching a greedy {path} and Graph content types by their base type', () => {
      expect(
        contract.check({ method: 'GET', path: '/api/me', status: 200, headers: jsonType, body: json({ id: 'x', displayName: null }) }),
      ).to.deep.equal([]);
      expect(
        contract.check({
          method: 'GET',
          path: '/api/graph/v1.0/me/messages',
          status: 200,
          headers: { 'content-type': 'application/json;odata.metadata=minimal;charset=utf-8' },
          body: json({ '@odata.nextLink': 'https://api.example/api/graph/v1.0/me/messages?$skiptoken=x', value: [] }),
        }),
      ).to.deep.equal([]);
      expect(
        contract.check({
          method: 'GET',
          path: '/api/graph/v1.0/me/photo/$value',
          status: 200,
          headers: { 'content-type': 'image/jpeg' },
          body: undefined,
        }),
      ).to.deep.equal([]);
      expect(
        contract.check({
          method: 'POST',
          path: '/api/graph/beta/$batch',
          status: 400,
          headers: jsonType,
          body: json({ error: 'invalid_batch', message: 'x' }),
        }),
      ).to.deep.equal([]);
      expect(
        contract.check({
          method: 'GET',
          path: '/api/graph/v1.0/me',
          status: 409,
          headers: jsonType,
          body: json({ error: { code: 'Conflict', message: 'x' } }),
        }),
      ).to.deep.equal([]);
      expect(
        contract.check({
          method: 'GET',
          path: '/nowhere',
          status: 404,
          headers: jsonType,
          body: json({ error: 'not_found', message: 'No such route.' }),
        }),
      ).to.deep.equal([]);
    });

    it('names an undocumented status, a missing required header, an unlisted content type, a body off its schema', () => {
      const problems = [
        contract.check({ method: 'GET', path: '/healthz', status: 201, headers: jsonType, body: json({ status: 'ok' }) }),
        contract.check({ method: 'GET', path: '/api/me', status: 401, headers: jsonType, body: json({ error: 'invalid_token', message: 'x' }) }),
        contract.check({ method: 'GET', path: '/healthz', status: 200, headers: { 'content-type': 'text/html' }, body: Buffer.from('<p>ok</p>') }),
        contract.check({ method: 'GET', path: '/healthz', status: 200, headers: jsonType, body: json({ status: 'fine' }) }),
        contract.check({ method: 'GET', path: '/api/me', status: 403, headers: jsonType, body: json({ error: 'made_up_code', message: 'x' }) }),
        contract.check({ method: 'POST', path: '/api/graph/v1.0/$batch', status: 200, headers: jsonType, body: json({ responses: [{ id: '1' }] }) }),
        contract.check({ method: 'GET', path: '/nowhere', status: 200, headers: jsonType, body: json({}) }),
      ];
      expect(problems.map((list) => list.length)).to.deep.equal([1, 1, 1, 1, 1, 1, 1]);
      expect(problems[0]?.[0]).to.match(/status 201 is not documented/);
      expect(problems[1]?.[0]).to.match(/required header WWW-Authenticate is missing/);
      expect(problems[2]?.[0]).to.match(/content type "text\/html" is not documented/);
      expect(problems[3]?.[0]).to.match(/does not match/);
      expect(problems[6]?.[0]).to.match(/x-unmatched-responses/);
    });

    it('turns a response that breaks the contract into a 500 naming the problem, whatever the client', async () => {
      const violations: string[] = [];
      const app = new Koa();
      app.use(contractGuard(contract, violations));
      app.use((ctx) => {
        ctx.body = { status: 'not quite' };
      });
      const server = app.listen(0, '127.0.0.1');
      await once(server, 'listening');
      try {
        const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`);
        expect(response.status).to.equal(500);
        expect(decodeURIComponent(response.headers.get(VIOLATION_HEADER) ?? '')).to.match(/GET \/healthz 200: the body does not match/);
        expect(((await response.json()) as { error: string }).error).to.equal('openapi_violation');
        expect(violations).to.have.length(1);
      } finally {
        server.close();
      }
    });
  });

  describe('served by the service', () => {
    const api = useService(useEmulator());

    it('fails a supertest request whose response breaks the contract', async () => {
      api.service.router.get('/undocumented-for-this-test', (ctx) => {
        ctx.body = { hello: 'world' };
      });
      const failure = await api.request.get('/undocumented-for-this-test').then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(String(failure)).to.match(
        /breaks openapi\/openapi.yaml: GET \/undocumented-for-this-test \(x-unmatched-responses\): status 200 is not documented/,
      );
      expect(api.contractViolations).to.have.length(1);
      api.contractViolations.length = 0;
    });

    it('GET /openapi.json documents every proxy route', async () => {
      const response = await api.request.get('/openapi.json').expect(200);
      expect(at(response.body, 'paths')).to.include.keys(
        '/api/me',
        '/api/graph/{path}',
        '/api/graph/{version}/$batch',
        '/api/downstream/{name}/{path}',
        '/docs',
      );
      expect(at(response.body, 'components', 'securitySchemes', 'bearer')).to.include({ type: 'http', scheme: 'bearer' });
      expect(at(response.body, 'paths', '/api/graph/{path}', 'get', 'security')).to.deep.equal([{ bearer: ['access_as_user'] }]);
    });

    it('GET /docs: Swagger UI from node_modules, no inline script, a strict script-src', async () => {
      const page = await api.request
        .get('/docs')
        .expect(200)
        .expect('content-type', /^text\/html/);
      const csp = String(page.headers['content-security-policy']);
      expect(csp).to.include("script-src 'self'");
      expect(csp).not.to.match(/script-src[^;]*unsafe-inline/);
      const html = page.text;
      const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
      expect(scripts).to.have.length.greaterThan(0);
      for (const [, attributes, content] of scripts) {
        expect(attributes).to.match(/\bsrc="\/docs\/[\w.-]+"/);
        expect(content?.trim()).to.equal('');
      }
      expect(html).not.to.match(/\son[a-z]+=/i);
      expect(html).not.to.match(/https?:\/\//);
      for (const [, file] of html.matchAll(/(?:src|href)="\/docs\/([\w.-]+)"/g)) {
        const asset = await api.request.get(`/docs/${file}`).expect(200);
        expect(asset.headers['content-type'], file).to.match(/^(text\/css|text\/javascript|image\/png)/);
      }
      const initializer = await api.request.get('/docs/docs-initializer.js').expect(200);
      expect(initializer.text).to.include("url: '/openapi.json'");
      await api.request.get('/docs/package.json').expect(404);
      await api.request.get('/docs/..%2Fpackage.json').expect(404);
    });

    it('GET /docs renders the reference in Chromium, under its Content-Security-Policy', async function () {
      if (!existsSync(CHROMIUM)) {
        if (process.env['CI']) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium package`);
        process.stderr.write(`  skipping the /docs rendering test: ${CHROMIUM} is missing (apt-get install -y chromium); in CI this fails\n`);
        this.skip();
      }
      this.timeout(60_000);
      const { chromium } = await import('playwright-core');
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      try {
        const page = await browser.newPage();
        const refused: string[] = [];
        page.on('console', (message) => {
          if (/Content Security Policy|Refused to/i.test(message.text())) refused.push(message.text());
        });
        await page.goto(`${api.baseUrl}/docs`);
        await page.waitForSelector('.swagger-ui .info .title', { timeout: 30_000 });
        expect(await page.textContent('.swagger-ui .info .title')).to.include('OBO middle-tier API');
        expect(await page.locator('.opblock').count()).to.be.at.least(10);
        // Runs in the page, where `globalThis` is the window Swagger UI put `ui` on.
        const sent = await page.evaluate(() => {
          const ui = (globalThis as unknown as { ui: { getConfigs(): { requestInterceptor(request: { url: string }): { url: string } } } }).ui;
          return ui.getConfigs().requestInterceptor({ url: '/api/graph/v1.0%2Fme%2Fmessages?$top=1' }).url;
        });
        expect(sent).to.equal(`${api.baseUrl}/api/graph/v1.0/me/messages?$top=1`);
        expect(refused).to.deep.equal([]);
      } finally {
        await browser.close();
      }
    });
  });
});
