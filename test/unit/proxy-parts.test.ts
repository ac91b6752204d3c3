import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { ConfigError, loadConfig, type Environment } from '../../api/config/load-config.js';
import { requestHeadersForDownstream, responseHeadersForCaller } from '../../api/downstream/headers.js';
import { checkGraphBatch } from '../../api/downstream/graph-batch.js';
import { proxyLinkRewrite, rewriteODataLinks, type LinkRewrite } from '../../api/downstream/odata-links.js';
import { compileAllowList, pathPatternProblem } from '../../api/downstream/path-allow-list.js';
import { parseProxyPath } from '../../api/downstream/proxy-path.js';
import { ApiError, BadGatewayError } from '../../api/errors.js';

function errorOf(run: () => unknown): ApiError | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof ApiError) return error;
    throw error;
  }
  return undefined;
}

describe('proxy parts', () => {
  describe('parseProxyPath', () => {
    it('decodes segments for the allow-list and keeps the raw path to forward', () => {
      expect(parseProxyPath('/v1.0/me/photo/$value')).to.deep.equal({
        raw: '/v1.0/me/photo/$value',
        segments: ['v1.0', 'me', 'photo', '$value'],
        decoded: '/v1.0/me/photo/$value',
      });
      expect(parseProxyPath('/v1.0/users/alice%40contoso.com/')).to.deep.include({
        segments: ['v1.0', 'users', 'alice@contoso.com'],
        decoded: '/v1.0/users/alice@contoso.com',
      });
      expect(parseProxyPath('')).to.deep.include({ raw: '/', decoded: '/' });
      expect(parseProxyPath("/v1.0/me/messages('AAMk%3D')")).to.deep.include({ decoded: "/v1.0/me/messages('AAMk=')" });
    });

    it('refuses everything that could reach another path or host', () => {
      const refused = [
        'v1.0/me',
        '/v1.0/../users',
        '/v1.0/%2E%2e/users',
        '/v1.0/.',
        '/v1.0/me%2fx',
        '/v1.0/me%5Cx',
        '/v1.0\\me',
        '//host/v1.0',
        '/v1.0//me',
        '/https:/x',
        '/javascript:alert(1)',
        '/v1.0/%252e%252e',
        '/v1.0/%00',
        '/v1.0/%0d%0aX-Injected:1',
        '/v1.0/%zz',
        '/v1.0/%E0%A4%A',
      ];
      for (const path of refused) expect(errorOf(() => parseProxyPath(path))?.code, path).to.equal('invalid_path');
    });
  });

  describe('path allow-list', () => {
    it('matches whole segments, * within one, ** across any number', () => {
      const allowed = compileAllowList(['/v1.0/me', '/v1.0/me/**', '/beta/me/**', '/v1.0/users/*/photo']);
      for (const path of ['/v1.0/me', '/v1.0/me/messages', '/v1.0/me/photo/$value', '/beta/me', '/beta/me/people', '/v1.0/users/bob/photo']) {
        expect(allowed(path), path).to.equal(true);
      }
      for (const path of ['/v1.0/meeting', '/v1.0/users', '/v1.0/users/bob', '/v1.0/users/bob/manager', '/v1.0/ME', '/beta/users/me', '/', '/v1.0']) {
        expect(allowed(path), path).to.equal(false);
      }
      expect(compileAllowList(['/**'])('/anything/at/all')).to.equal(true);
      expect(compileAllowList(['/v1.0/me.json'])('/v1.0/meXjson'), 'a dot is a dot').to.equal(false);
    });

    it('says what is wrong with a bad pattern', () => {
      expect(pathPatternProblem('/v1.0/me/**')).to.equal(undefined);
      expect(pathPatternProblem('v1.0/me')).to.match(/must start with \//);
      expect(pathPatternProblem('/v1.0//me')).to.match(/empty segment/);
      expect(pathPatternProblem('/v1.0/../users')).to.match(/\.\. segment/);
      expect(pathPatternProblem('/v1.0/me**')).to.match(/whole segment/);
      expect(pathPatternProblem('/v1.0/me%2f')).to.match(/may not contain/);
    });
  });

  describe('@odata links, rewritten while streaming', () => {
    const toProxy: LinkRewrite = (link) =>
      link.startsWith('https://graph.example/') ? `https://api.example/api/graph/${link.slice(22)}` : undefined;

    async function run(text: string, chunkSize = text.length, rewrite = toProxy, holdBytes?: number): Promise<string> {
      const bytes = Buffer.from(text);
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
      const out = await rewriteODataLinks(Readable.from(chunks), rewrite, holdBytes);
      const received: Buffer[] = [];
      for await (const chunk of out) received.push(chunk as Buffer);
      return Buffer.concat(received).toString('utf8');
    }

    it('rewrites links to Graph, whatever the chunk boundaries, leaving every other byte alone', async () => {
      const text =
        '{"@odata.context":"https://graph.example/v1.0/$metadata#x", "@odata.nextLink" : "https:\\/\\/graph.example\\/v1.0\\/me\\/messages?$skiptoken=a%2Fb",' +
        '"value":[{"id":"1","note":"@odata.nextLink \\" inside a string","members@odata.nextLink":"https://graph.example/v1.0/groups/1/members?$skiptoken=z"}],"n":1e3}';
      const expected =
        '{"@odata.context":"https://graph.example/v1.0/$metadata#x", "@odata.nextLink" : "https://api.example/api/graph/v1.0/me/messages?$skiptoken=a%2Fb",' +
        '"value":[{"id":"1","note":"@odata.nextLink \\" inside a string","members@odata.nextLink":"https://api.example/api/graph/v1.0/groups/1/members?$skiptoken=z"}],"n":1e3}';
      for (const size of [1, 2, 3, 7, 64, text.length]) expect(await run(text, size), `chunks of ${size}`).to.equal(expected);
    });

    it('drops links elsewhere (first, middle or last member), keeping the JSON valid', async () => {
      const off = 'https://evil.example/x';
      const cases: [string, string][] = [
        [`{"a":[{"@odata.nextLink":"${off}","id":1}]}`, '{"a":[{"id":1}]}'],
        [`{"a":[{"id":1,"x@odata.nextLink":"${off}","y":2}]}`, '{"a":[{"id":1,"y":2}]}'],
        [`{"a":[{"id":1, "@odata.deltaLink":"${off}"}]}`, '{"a":[{"id":1}]}'],
        [`{"a":[{"@odata.deltaLink":"${off}"}]}`, '{"a":[{}]}'],
        [`{"a":[{"@odata.nextLink":"${off}","@nextLink":"${off}","id":1}]}`, '{"a":[{"id":1}]}'],
        [`{"@odata.deltaLink":"${off}","value":[]}`, '{"value":[]}'],
      ];
      for (const [input, output] of cases) {
        for (const size of [1, 5, input.length]) {
          const result = await run(input, size);
          expect(result, input).to.equal(output);
          expect(() => {
            JSON.parse(result);
          }).not.to.throw();
        }
      }
    });

    // docs/bad-input-checklist.md #59
    it('a top-level next-page link that cannot be rewritten is a 502, even after the value', async () => {
      for (const text of [
        '{"@odata.nextLink":"https://evil.example/x","value":[]}',
        '{"value":[1,2,3],"@odata.nextLink":"https://evil.example/x"}',
        '{"@odata.nextLink":"not a url"}',
      ]) {
        const failure = await run(text, 4).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(failure, text).to.be.instanceOf(BadGatewayError);
      }
    });

    it('passes what is not JSON, or not a link, through unchanged', async () => {
      for (const text of [
        'not json {"@odata.nextLink":',
        '{"@odata.nextLink":42}',
        '{"truncated":"@odata.nextLink',
        '{"x":"y"',
        '',
        '[1,"@odata.nextLink"]',
      ]) {
        expect(await run(text, 3)).to.equal(text);
      }
    });

    it('holds output back only up to holdBytes; a late failure then breaks the stream', async () => {
      const big = `{"value":["${'x'.repeat(5000)}"],"@odata.nextLink":"https://evil.example/x"}`;
      // Resolves (the status can no longer change) once 1000 bytes wait; the bad link comes later.
      const out = await rewriteODataLinks(Readable.from([Buffer.from(big.slice(0, 5100)), Buffer.from(big.slice(5100))]), toProxy, 1000);
      const failure = await (async () => {
        for await (const chunk of out) expect(chunk).to.be.instanceOf(Buffer);
      })().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).to.be.instanceOf(BadGatewayError);
    });
  });

  describe('proxyLinkRewrite', () => {
    const request = new URL('https://graph.microsoft.com/v1.0/me/messages');

    it('maps the downstream to our URL, path prefix and raw query kept', () => {
      const rewrite = proxyLinkRewrite('https://graph.microsoft.com', request, 'https://api.contoso.com/api/graph');
      expect(rewrite("https://graph.microsoft.com/v1.0/users?$filter=startswith(displayName,'a')&$skiptoken=X")).to.equal(
        "https://api.contoso.com/api/graph/v1.0/users?$filter=startswith(displayName,'a')&$skiptoken=X",
      );
      expect(rewrite('https://GRAPH.microsoft.com:443/v1.0/me?$skip=10')).to.equal('https://api.contoso.com/api/graph/v1.0/me?$skip=10');
      expect(rewrite('?$skiptoken=rel')).to.equal('https://api.contoso.com/api/graph/v1.0/me/messages?$skiptoken=rel');
      for (const elsewhere of [
        'https://evil.example/v1.0/me',
        'http://graph.microsoft.com/v1.0/me',
        'https://graph.microsoft.com.evil.example/v1.0',
        'https://user@graph.microsoft.com/v1.0/me',
        'http://[bad',
      ]) {
        expect(rewrite(elsewhere), elsewhere).to.equal(undefined);
      }
      const withPrefix = proxyLinkRewrite(
        'https://files.example/api/v2',
        new URL('https://files.example/api/v2/list'),
        'https://api.contoso.com/api/downstream/files',
      );
      expect(withPrefix('https://files.example/api/v2/list?page=2')).to.equal('https://api.contoso.com/api/downstream/files/list?page=2');
      expect(withPrefix('https://files.example/api/v3/list'), 'outside the base path').to.equal(undefined);
      expect(withPrefix('https://files.example/api/v2x/list'), 'not a path-segment prefix').to.equal(undefined);
    });
  });

  describe('checkGraphBatch', () => {
    const policy = { version: 'v1.0', routePrefix: '/api/graph', allowed: compileAllowList(['/v1.0/me', '/v1.0/me/**']), allowedMethods: ['GET'] };
    const check = (body: unknown) => errorOf(() => checkGraphBatch(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), policy));
    const item = (id: string, url = '/me', extra: Record<string, unknown> = {}) => ({ id, method: 'GET', url, ...extra });

    it('accepts up to 20 allowed requests, relative URLs with or without a slash, dependsOn within the batch', () => {
      expect(check({ requests: Array.from({ length: 20 }, (_, i) => item(String(i + 1), i % 2 ? 'me/messages?$top=1' : '/me')) })).to.equal(
        undefined,
      );
      expect(check({ requests: [item('a'), item('b', '/me/messages', { dependsOn: ['a'], headers: { ConsistencyLevel: 'eventual' } })] })).to.equal(
        undefined,
      );
    });

    // docs/bad-input-checklist.md #60 (more than 20 requests), among the rest
    it('refuses what Graph would refuse, and what our policy refuses', () => {
      const cases: [unknown, number, string][] = [
        ['{"requests":', 400, 'invalid_batch'],
        [[item('1')], 400, 'invalid_batch'],
        [{ requests: Array.from({ length: 21 }, (_, i) => item(String(i))) }, 400, 'invalid_batch'],
        [{ requests: [item('1'), item('1')] }, 400, 'invalid_batch'],
        [{ requests: [{ id: 1, method: 'GET', url: '/me' }] }, 400, 'invalid_batch'],
        [{ requests: [item('1', '/me', { dependsOn: ['2'] })] }, 400, 'invalid_batch'],
        [{ requests: [item('1', '/me', { headers: { authorization: 'Bearer x' } })] }, 400, 'invalid_batch'],
        [{ requests: [item('1', 'https://graph.microsoft.com/v1.0/me')] }, 400, 'invalid_path'],
        [{ requests: [item('1', '/me/%2e%2e/users')] }, 400, 'invalid_path'],
        [{ requests: [item('1', '/users')] }, 403, 'forbidden'],
        [{ requests: [{ id: '1', method: 'DELETE', url: '/me' }] }, 403, 'forbidden'],
      ];
      for (const [body, status, code] of cases) {
        const error = check(body);
        expect({ status: error?.status, code: error?.code }, JSON.stringify(body).slice(0, 80)).to.deep.equal({ status, code });
      }
      expect(check({ requests: [item('a"b', '/users')] })?.message, 'caller text is never quoted raw').not.to.include('"b');
    });
  });

  describe('header hygiene', () => {
    it('caller → downstream: no credentials, no hop-by-hop, no forwarding or identity headers', () => {
      const forwarded = requestHeadersForDownstream({
        authorization: 'Bearer caller',
        cookie: 'a=b',
        host: 'api.example',
        connection: 'keep-alive, X-Custom-Hop',
        'x-custom-hop': '1',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        'content-length': '10',
        'x-forwarded-for': '1.2.3.4',
        'sec-fetch-mode': 'cors',
        'accept-encoding': 'gzip',
        'client-request-id': 'mine',
        accept: 'application/json',
        prefer: 'return=minimal',
        'if-match': '"etag"',
        consistencylevel: 'eventual',
        'content-type': 'application/json',
      });
      expect(forwarded).to.deep.equal({
        accept: 'application/json',
        prefer: 'return=minimal',
        'if-match': '"etag"',
        consistencylevel: 'eventual',
        'content-type': 'application/json',
      });
    });

    it('downstream → caller: no cookies, challenges, hop-by-hop or caching headers', () => {
      const passed = responseHeadersForCaller({
        'set-cookie': ['a=b', 'c=d'],
        'www-authenticate': 'Bearer error="invalid_token"',
        connection: 'x-hop',
        'x-hop': '1',
        'transfer-encoding': 'chunked',
        'strict-transport-security': 'max-age=1',
        'cache-control': 'public, max-age=600',
        'content-type': 'application/json',
        'request-id': 'r',
        'client-request-id': 'c',
        'retry-after': '2.5',
        etag: 'W/"1"',
        'x-ms-ags-diagnostic': '{}',
      });
      expect(passed).to.deep.equal({
        'content-type': 'application/json',
        'request-id': 'r',
        'client-request-id': 'c',
        'retry-after': '2.5',
        etag: 'W/"1"',
        'x-ms-ags-diagnostic': '{}',
      });
    });
  });

  describe('configuration: GRAPH_ALLOWED_*, GRAPH_MAX_RETRIES, DOWNSTREAM_APIS, PUBLIC_BASE_URL', () => {
    const base: Environment = {
      AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
      AZURE_CLIENT_ID: 'api-client',
      AZURE_CLIENT_SECRET: 'secret',
    };
    const problemsOf = (env: Environment): string[] => {
      try {
        loadConfig({ ...base, ...env });
      } catch (error) {
        expect(error).to.be.instanceOf(ConfigError);
        return (error as ConfigError).problems;
      }
      return [];
    };

    it('reads the Graph proxy settings', () => {
      const config = loadConfig({
        ...base,
        GRAPH_ALLOWED_PATHS: '/v1.0/me/**, /v1.0/users/*',
        GRAPH_ALLOWED_METHODS: 'get,post',
        GRAPH_MAX_RETRIES: '0',
        GRAPH_MAX_RETRY_WAIT_MS: '500',
        PUBLIC_BASE_URL: 'https://api.contoso.com/obo/',
      });
      expect(config.graph).to.deep.include({
        allowedPaths: ['/v1.0/me/**', '/v1.0/users/*'],
        allowedMethods: ['GET', 'POST'],
        maxRetries: 0,
        maxRetryWaitMs: 500,
        batch: true,
      });
      expect(config.publicBaseUrl).to.equal('https://api.contoso.com/obo');
    });

    it('reads DOWNSTREAM_APIS inline or from a file, with defaults from the GRAPH_* settings', () => {
      const apis = {
        contoso: {
          baseUrl: 'https://api.contoso.com/v2/',
          scopes: ['api://contoso/read'],
          allowedPaths: ['/orders/**'],
          allowedMethods: ['get', 'PATCH'],
        },
      };
      const inline = loadConfig({ ...base, GRAPH_TIMEOUT_MS: '5000', DOWNSTREAM_APIS: JSON.stringify(apis) });
      expect(Object.keys(inline.downstreams)).to.deep.equal(['graph', 'contoso']);
      expect(inline.downstreams['contoso']).to.deep.equal({
        name: 'contoso',
        baseUrl: 'https://api.contoso.com/v2',
        scopes: ['api://contoso/read'],
        allowedPaths: ['/orders/**'],
        allowedMethods: ['GET', 'PATCH'],
        batch: false,
        timeoutMs: 5000,
        maxRetries: 2,
        maxRetryWaitMs: 10_000,
      });
      const file = join(mkdtempSync(join(tmpdir(), 'downstreams-')), 'apis.json');
      writeFileSync(file, JSON.stringify({ ...apis, other: { ...apis.contoso, timeoutMs: 100, maxRetries: 0, batch: true } }));
      const fromFile = loadConfig({ ...base, DOWNSTREAM_APIS: file });
      expect(fromFile.downstreams['other']).to.deep.include({ timeoutMs: 100, maxRetries: 0, batch: true });
    });

    it('names every problem, entry and field', () => {
      const problems = problemsOf({
        GRAPH_ALLOWED_PATHS: '/v1.0/me,users',
        GRAPH_ALLOWED_METHODS: 'GET,FETCH',
        GRAPH_MAX_RETRIES: '11',
        PUBLIC_BASE_URL: 'ftp://x',
        DOWNSTREAM_APIS: JSON.stringify({
          graph: { baseUrl: 'https://x', scopes: ['s'], allowedPaths: ['/'] },
          'bad name': { baseUrl: 'https://x', scopes: ['s'], allowedPaths: ['/'] },
          broken: {
            baseUrl: 'https://u:p@x?q',
            scopes: [],
            allowedPaths: ['/a/../b'],
            allowedMethods: ['TRACE'],
            batch: 'yes',
            timeoutMs: 0,
            allowedPath: [],
          },
        }),
      });
      const expected = [
        /^GRAPH_ALLOWED_PATHS: "users" must start with \//,
        /^GRAPH_ALLOWED_METHODS: .*"FETCH"/,
        /^GRAPH_MAX_RETRIES: /,
        /^PUBLIC_BASE_URL: /,
        /^DOWNSTREAM_APIS: "graph": the name graph is taken/,
        /^DOWNSTREAM_APIS: "bad name": a name is/,
        /^DOWNSTREAM_APIS: "broken".allowedPath: unknown field/,
        /^DOWNSTREAM_APIS: "broken".baseUrl: /,
        /^DOWNSTREAM_APIS: "broken".scopes: /,
        /^DOWNSTREAM_APIS: "broken".allowedPaths: .*\.\. segment/,
        /^DOWNSTREAM_APIS: "broken".allowedMethods: "TRACE"/,
        /^DOWNSTREAM_APIS: "broken".batch: /,
        /^DOWNSTREAM_APIS: "broken".timeoutMs: /,
      ];
      for (const pattern of expected)
        expect(
          problems.some((problem) => pattern.test(problem)),
          `${pattern} in\n${problems.join('\n')}`,
        ).to.equal(true);
      expect(problems.join('\n'), 'never a credential').not.to.include('u:p');
      expect(problemsOf({ DOWNSTREAM_APIS: '{not json' })).to.deep.equal([
        'DOWNSTREAM_APIS: expected a JSON object { "<name>": { "baseUrl": …, "scopes": […], "allowedPaths": […] } } (or the path of a file holding one); the JSON does not parse',
      ]);
      expect(problemsOf({ DOWNSTREAM_APIS: '/no/such/file.json' })[0]).to.match(/^DOWNSTREAM_APIS: .*cannot read the file/);
      expect(problemsOf({ DOWNSTREAM_APIS: '[]' })[0]).to.match(/^DOWNSTREAM_APIS: expected a JSON object/);
    });
  });
});
