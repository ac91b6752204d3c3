import { Readable } from 'node:stream';
import { expect } from 'chai';
import fc from 'fast-check';
import { ApiError, BadGatewayError } from '../../api/errors.js';
import { proxyLinkRewrite, rewriteODataLinks, type LinkRewrite } from '../../api/downstream/odata-links.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
const counts: Record<string, number> = {};

/** Downstreams as configured (Graph at its root, another under a path) and where we serve each. */
const SETUPS = [
  {
    downstream: 'https://graph.microsoft.com',
    request: 'https://graph.microsoft.com/v1.0/me/messages?$top=2',
    proxy: 'https://api.contoso.com/api/graph',
  },
  {
    downstream: 'http://files.example:8080/files',
    request: 'http://files.example:8080/files/list',
    proxy: 'http://127.0.0.1:3000/api/downstream/files',
  },
];

/** Inside `proxyBase` as any client resolves it: same origin, its path and below (dot segments applied). */
function insideBase(link: string, proxyBase: string): boolean {
  if (!link.startsWith(`${proxyBase}/`) || !URL.canParse(link)) return false;
  const url = new URL(link);
  const base = new URL(proxyBase);
  return url.origin === base.origin && !url.username && !url.password && url.pathname.startsWith(`${base.pathname}/`);
}

const pathSegments = fc.array(
  fc.constantFrom(
    'v1.0',
    'me',
    'messages',
    'files',
    'list',
    '..',
    '.',
    '%2e%2e',
    '%2E',
    '.%2e',
    '%2f',
    '%5c',
    '\\..',
    '..\\..',
    '',
    'é',
    '%00',
    '\t',
    'graph',
  ),
  { maxLength: 5 },
);
const query = fc.constantFrom('', '?$skiptoken=abc', '?$skip=10&$top=5', '?a=%2F..%2F', '?next=https://evil.example/', '?x=\u2028');
const fragment = fc.constantFrom('', '', '#frag', '#/../..');
/** Links a downstream could send: its own, elsewhere, relative, dotted, encoded, with userinfo, unparseable. */
const link = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...SETUPS.map((setup) => setup.downstream), 'https://GRAPH.microsoft.com:443', 'http://FILES.example:8080/files'),
        pathSegments,
        query,
        fragment,
      )
      .map(([base, segments, q, f]) => `${base}/${segments.join('/')}${q}${f}`),
  },
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.constantFrom('https://', 'http://', 'HTTPS://', '//', '', 'https:', 'https:\\\\', ' https://', 'ht\ttps://', 'javascript:'),
        fc.constantFrom('', '', '', 'u:p@', 'u@', '@'),
        fc.constantFrom(
          'graph.microsoft.com',
          'GRAPH.microsoft.com',
          'graph.microsoft.com.evil.example',
          'evil.example',
          'files.example',
          '127.0.0.1',
          '[::1]',
          'graph.microsoft.com\\evil.example',
        ),
        fc.constantFrom('', '', ':443', ':8080', ':80', ':', ':99999'),
        pathSegments,
        query,
        fragment,
      )
      .map(([scheme, user, host, port, segments, query, fragment]) => `${scheme}${user}${host}${port}/${segments.join('/')}${query}${fragment}`),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom('?$skiptoken=rel', '/v1.0/me?$skip=1', '../users', '/files/../../x', 'list?p=2', '', '/', '\\\\evil.example/x'),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
);

describe('property: the @odata link rewriter (fast-check)', () => {
  after(() => console.log(`      @odata link properties, cases run: ${JSON.stringify(counts)}`));

  it('never rewrites a link to somewhere outside this API’s base, and never throws', () => {
    counts['proxyLinkRewrite'] = RUNS;
    fc.assert(
      fc.property(fc.constantFrom(...SETUPS), link, ({ downstream, request, proxy }, candidate) => {
        const rewrite = proxyLinkRewrite(downstream, new URL(request), proxy);
        const rewritten = rewrite(candidate);
        if (rewritten !== undefined) expect(insideBase(rewritten, proxy), `${JSON.stringify(candidate)} → ${rewritten}`).to.equal(true);
      }),
      { numRuns: RUNS },
    );
  });

  /** A page as a downstream sends it: links at the top, in items, in nested objects; member names sometimes escaped. */
  const memberName = fc.constantFrom('@odata.nextLink', '@odata.deltaLink', '@nextLink', 'members@odata.nextLink', '@odata.context', 'id', 'note');
  const memberValue = fc.oneof({ weight: 3, arbitrary: link }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) });
  const item = fc.dictionary(memberName, memberValue, { maxKeys: 4 });
  const page = fc
    .record({ top: fc.dictionary(memberName, memberValue, { maxKeys: 3 }), value: fc.array(item, { maxLength: 4 }) })
    .map(({ top, value }) => ({ ...top, value }));
  /** Escapes one character of each member name as \u00XX (still the same name to any JSON reader). */
  const escapeNames = (text: string, at: number) =>
    text.replace(/"((?:members)?@[a-zA-Z.]+)":/g, (_whole, name: string) => {
      const i = at % name.length;
      return `"${name.slice(0, i)}\\u${name.charCodeAt(i).toString(16).padStart(4, '0')}${name.slice(i + 1)}":`;
    });

  it('a streamed page: every link member a JSON reader sees is inside the base or gone; failures are ApiErrors', async () => {
    counts['rewriteODataLinks'] = RUNS;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...SETUPS),
        page,
        fc.constantFrom(0, 2),
        fc.option(fc.nat(), { nil: undefined }),
        fc.array(fc.nat(), { maxLength: 6 }),
        async ({ downstream, request, proxy }, body, indent, escapeAt, cuts) => {
          const rewrite: LinkRewrite = proxyLinkRewrite(downstream, new URL(request), proxy);
          let text = JSON.stringify(body, null, indent);
          if (escapeAt !== undefined) text = escapeNames(text, escapeAt);
          const bytes = Buffer.from(text);
          const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
          const chunks = [0, ...points].map((start, i) => bytes.subarray(start, points[i] ?? bytes.length)).filter((chunk) => chunk.length > 0);
          let output: string;
          try {
            const stream = await rewriteODataLinks(Readable.from(chunks), rewrite, 64);
            const received: Buffer[] = [];
            for await (const chunk of stream) received.push(chunk as Buffer);
            output = Buffer.concat(received).toString('utf8');
          } catch (error) {
            expect(error, String(error)).to.be.instanceOf(ApiError);
            expect(error).to.be.instanceOf(BadGatewayError);
            return;
          }
          const parsed = JSON.parse(output) as unknown;
          const walk = (value: unknown): void => {
            if (Array.isArray(value)) value.forEach(walk);
            else if (value !== null && typeof value === 'object') {
              for (const [name, member] of Object.entries(value)) {
                if (/@(?:odata\.)?(?:nextLink|deltaLink)$/.test(name) && typeof member === 'string') {
                  expect(insideBase(member, proxy), `${name}: ${member} in ${text}`).to.equal(true);
                }
                walk(member);
              }
            }
          };
          walk(parsed);
        },
      ),
      { numRuns: RUNS },
    );
  });
});
