import { expect } from 'chai';
import fc from 'fast-check';
import { ApiError, InvalidBatchError } from '../../api/errors.js';
import { checkGraphBatch, writeGraphBatch, type BatchPolicy, type GraphBatch } from '../../api/downstream/graph-batch.js';
import { compileAllowList } from '../../api/downstream/path-allow-list.js';
import { parseProxyPath } from '../../api/downstream/proxy-path.js';

/** Cases per property: bounded in `npm test`, more with FUZZ_RUNS (e.g. `FUZZ_RUNS=20000 npm run fuzz`). */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 200);
const policy: BatchPolicy = {
  version: 'v1.0',
  routePrefix: '/api/graph',
  allowed: compileAllowList(['/v1.0/me', '/v1.0/me/**']),
  allowedMethods: ['GET', 'POST'],
};

/** Credentials, and the method and URL overrides: never in a forwarded batch item. */
const NEVER_FORWARDED = [
  'authorization',
  'cookie',
  'host',
  'proxy-authorization',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
];

type Outcome = { batch: GraphBatch } | { error: ApiError };

/** The checker's answer; anything thrown that is not one of our ApiErrors fails the property. */
function check(text: string | Uint8Array): Outcome {
  try {
    return { batch: checkGraphBatch(typeof text === 'string' ? Buffer.from(text, 'utf8') : text, policy) };
  } catch (error) {
    if (error instanceof ApiError) return { error };
    throw error;
  }
}

/** What an accepted batch may hold, decided here without the checker's code. */
function assertWithinPolicy(batch: GraphBatch): void {
  expect(batch.requests.length).to.be.within(1, 20);
  for (const request of batch.requests) {
    expect(policy.allowedMethods).to.include(request.method);
    expect(request.url.startsWith('/')).to.equal(true);
    const path = request.url.split('?')[0] ?? '';
    const parsed = parseProxyPath(path);
    expect(parsed.segments[0] ?? '', 'forwarded relative to the version').to.not.match(/^(?:v\d|beta$|api$)/i);
    expect(policy.allowed(`/v1.0${parsed.decoded === '/' ? '' : parsed.decoded}`), request.url).to.equal(true);
    expect(request.url).to.not.match(/[\s#]/);
    for (const name of Object.keys(request.headers ?? {})) expect(NEVER_FORWARDED).to.not.include(name.toLowerCase());
  }
}

/** The forwarded bytes are the checked batch: they read back as it, and checking them again changes nothing. */
function assertForwardedIsChecked(batch: GraphBatch): void {
  const written = writeGraphBatch(batch);
  const again = check(written);
  expect('batch' in again, 'our own output passes our own check').to.equal(true);
  if ('batch' in again) expect(writeGraphBatch(again.batch).equals(written)).to.equal(true);
  const read = JSON.parse(written.toString('utf8')) as { requests: Record<string, unknown>[] };
  expect(Object.keys(read)).to.deep.equal(['requests']);
  expect(read.requests.map((r) => [r['id'], r['method'], r['url']])).to.deep.equal(batch.requests.map((r) => [r.id, r.method, r.url]));
}

// --- generators -------------------------------------------------------------------------------

const randomCase = (name: string) =>
  fc
    .array(fc.boolean(), { minLength: name.length, maxLength: name.length })
    .map((flags) => [...name].map((c, i) => (flags[i] ? c.toUpperCase() : c)).join(''));

/** A JSON object written as its members, so that names can be repeated and re-cased. */
type Members = [string, string][];
const objectText = (members: Members) => `{${members.map(([name, value]) => `${JSON.stringify(name)}:${value}`).join(',')}}`;

const allowedUrls = [
  '/me',
  'me',
  '/me/messages?$top=1',
  '/v1.0/me',
  'v1.0/me/memberOf',
  '/api/graph/v1.0/me/photo/$value',
  '/me/',
  '/me?$select=id,displayName',
];
const hostileUrls = [
  '/users',
  '/users/victim',
  '/v1.0/users',
  'v1.0/users/victim',
  '/api/graph/v1.0/users',
  '/me/../users',
  '/me/%2e%2e/users',
  '/me%2f..%2fusers',
  '//evil.example/me',
  'https://evil.example/v1.0/me',
  '/me#/../users',
  '/beta/me',
  '/v1.0/v1.0/me',
  '/api/graph/me',
  '/api/graph/beta/me',
  '/API/graph/v1.0/users',
  '/me/$batch',
  '/$BATCH',
  '/me\\..\\users',
  '/me\r\nHost: evil',
  '',
];
// Weighted towards well-formed, so that a good share of generated batches is accepted and checked.
const url = fc.oneof({ arbitrary: fc.constantFrom(...allowedUrls), weight: 12 }, fc.constantFrom(...hostileUrls), fc.string(), fc.webPath());
const method = fc.oneof(
  { arbitrary: fc.constantFrom('GET', 'get', 'Post'), weight: 12 },
  fc.constantFrom('DELETE', 'PATCH', 'ǵet', 'poſt'),
  fc.string({ maxLength: 8 }),
);
const headerName = fc.oneof(
  { arbitrary: fc.constantFrom('ConsistencyLevel', 'Prefer', 'Content-Type', 'X-HTTP-Method-Override', 'X-Original-URL'), weight: 6 },
  fc.constantFrom('Authorization', 'AUTHORIZATION', 'cookie', 'Host', 'bad name', 'proxy-authorization'),
);
const headers = fc.uniqueArray(fc.tuple(headerName, fc.oneof({ arbitrary: fc.constant('eventual'), weight: 4 }, fc.string({ maxLength: 12 }))), {
  maxLength: 3,
  selector: ([name]) => name.toLowerCase(),
});
const json = fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value) ?? 'null');

/** A request object: mostly well-formed members in random case, sometimes extra or odd ones. */
const requestMembers = (id: string): fc.Arbitrary<Members> =>
  fc
    .record({
      id: fc.oneof({ arbitrary: fc.constant(JSON.stringify(id)), weight: 12 }, fc.constantFrom('1', '""', 'null', '"1"')),
      method: method.map((m) => JSON.stringify(m)),
      url: url.map((u) => JSON.stringify(u)),
      headers: fc.option(
        headers.map((pairs) => objectText(pairs.map(([n, v]) => [n, JSON.stringify(v)]))),
        { nil: undefined },
      ),
      body: fc.option(json, { nil: undefined }),
      dependsOn: fc.option(fc.constantFrom('["1"]', '["nope"]', '[]', '"1"'), { nil: undefined }),
      extra: fc.oneof(
        { arbitrary: fc.constant(undefined), weight: 8 },
        fc.tuple(fc.constantFrom('atomicityGroup', 'ıd', 'Urℓ', '__proto__', 'method ', 'ID'), json),
      ),
    })
    .chain(({ extra, ...members }) =>
      fc.tuple(...Object.keys(members).map((name) => randomCase(name))).map((names) => {
        const list: Members = [];
        Object.values(members).forEach((value, i) => {
          if (value !== undefined) list.push([names[i] ?? '', value]);
        });
        if (extra) list.push(extra);
        return list;
      }),
    );

const batchMembers: fc.Arbitrary<Members[]> = fc
  .oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 6 }, fc.integer({ min: 0, max: 22 }))
  .chain((count) => fc.tuple(...Array.from({ length: count }, (_, i) => requestMembers(String(i + 1)))));

const batchText = (requests: Members[], top: Members = []) => objectText([['requests', `[${requests.map(objectText).join(',')}]`], ...top]);

/** Small edits of a text: what a fuzzer does to a well-formed batch. */
const mutated = (text: string) =>
  fc.array(fc.tuple(fc.nat(), fc.nat({ max: 4 }), fc.string({ maxLength: 3 })), { minLength: 1, maxLength: 4 }).map((edits) =>
    edits.reduce((current, [at, remove, insert]) => {
      const i = current.length === 0 ? 0 : at % current.length;
      return current.slice(0, i) + insert + current.slice(i + remove);
    }, text),
  );

// --- properties -------------------------------------------------------------------------------

describe('the $batch checker, with generated and mutated batches (fast-check)', () => {
  const runs: Record<string, number> = {};
  const property = <T>(name: string, arbitrary: fc.Arbitrary<T>, predicate: (value: T) => void) =>
    it(name, function () {
      this.timeout(Math.max(20_000, RUNS * 10)); // FUZZ_RUNS in the tens of thousands takes minutes
      let count = 0;
      fc.assert(
        fc.property(arbitrary, (value) => {
          count += 1;
          predicate(value);
        }),
        { numRuns: RUNS },
      );
      runs[name] = count;
    });
  after(() => {
    // The counts for the closing note: how many cases each property ran.
    if (process.env['FUZZ_REPORT']) console.log(JSON.stringify({ ...runs, acceptedGenerated: accepted }));
  });

  let accepted = 0;
  property('generated batches: only ApiErrors, and what is accepted is within the policy and forwarded as checked', batchMembers, (requests) => {
    const outcome = check(batchText(requests));
    if ('batch' in outcome) {
      accepted += 1;
      assertWithinPolicy(outcome.batch);
      assertForwardedIsChecked(outcome.batch);
    }
  });

  property(
    'mutated batches: only ApiErrors, and what is accepted is within the policy',
    batchMembers.chain((requests) => mutated(batchText(requests))),
    (text) => {
      const outcome = check(text);
      if ('batch' in outcome) {
        assertWithinPolicy(outcome.batch);
        assertForwardedIsChecked(outcome.batch);
      }
    },
  );

  property('arbitrary bytes: only ApiErrors', fc.uint8Array({ maxLength: 256 }), (bytes) => {
    const outcome = check(bytes);
    if ('batch' in outcome) assertWithinPolicy(outcome.batch);
  });

  property(
    'smuggling shapes: a member repeated in any case, at the top, in a request or in its headers, is always invalid_batch',
    fc.record({
      level: fc.constantFrom('top', 'request', 'headers'),
      name: fc.constantFrom('requests', 'id', 'method', 'url', 'headers', 'body', 'dependsOn', 'Prefer'),
      spelling: fc.nat(),
      hostile: fc.constantFrom('{"id":"1","method":"DELETE","url":"/users/victim"}', '{"id":"1","method":"GET","url":"/me"}'),
      first: fc.boolean(),
    }),
    ({ level, name, spelling, hostile, first }) => {
      const recase = [...name].map((c, i) => ((spelling >> i) & 1 ? c.toUpperCase() : c.toLowerCase())).join('');
      const plain: Members = [
        ['id', '"1"'],
        ['method', '"GET"'],
        ['url', '"/me"'],
        ['headers', '{"Prefer":"a"}'],
      ];
      let text: string;
      if (level === 'top') {
        const twin: [string, string] = [name === 'requests' ? recase : name, `[${hostile}]`];
        const own: [string, string] = ['requests', `[${objectText(plain)}]`];
        text = objectText(first ? [twin, own] : [own, twin]);
        if (name !== 'requests') text = objectText([own, [recase, '1'], [name, '2']]);
      } else if (level === 'request') {
        const twin: [string, string] = [recase, name === 'url' ? '"/users/victim"' : name === 'method' ? '"DELETE"' : '"x"'];
        const members = plain.some(([n]) => n.toLowerCase() === name.toLowerCase()) ? plain : [...plain, [name, '"y"'] as [string, string]];
        text = batchText([first ? [twin, ...members] : [...members, twin]]);
      } else {
        text = batchText([
          [
            ...plain.slice(0, 3),
            [
              'headers',
              objectText([
                [name, '"a"'],
                [recase, '"b"'],
              ]),
            ],
          ],
        ]);
      }
      const outcome = check(text);
      expect('error' in outcome && outcome.error instanceof InvalidBatchError, text).to.equal(true);
    },
  );

  property(
    'well-formed batches in any spelling: accepted, urls in Graph form, and forwarded exactly',
    fc.array(
      fc.record({
        method: fc.constantFrom('GET', 'get', 'Post'),
        url: fc.constantFrom(...allowedUrls),
        body: fc.option(
          fc.jsonValue({ maxDepth: 3 }).filter((v) => !hasCaseInsensitiveTwins(v)),
          { nil: undefined },
        ),
        headers: fc.option(fc.constantFrom({ ConsistencyLevel: 'eventual' }, { Prefer: 'odata.maxpagesize=5', 'Content-Type': 'application/json' }), {
          nil: undefined,
        }),
      }),
      { minLength: 1, maxLength: 20 },
    ),
    (items) => {
      const sent = { requests: items.map((item, i) => ({ id: `r${i}`, ...item, ...(i > 0 ? { dependsOn: [`r${i - 1}`] } : {}) })) };
      const outcome = check(JSON.stringify(sent));
      if (!('batch' in outcome)) throw new Error(`refused: ${outcome.error.message}`);
      assertWithinPolicy(outcome.batch);
      assertForwardedIsChecked(outcome.batch);
      const expected = {
        requests: sent.requests.map((r) => ({
          ...(JSON.parse(JSON.stringify(r)) as Record<string, unknown>),
          method: r.method.toUpperCase(),
          url: graphForm(r.url),
        })),
      };
      expect(JSON.parse(writeGraphBatch(outcome.batch).toString('utf8'))).to.deep.equal(expected);
    },
  );

  it('some generated batches were accepted (so the policy checks above ran)', () => {
    expect(accepted).to.be.greaterThan(0);
  });
});

/** The Graph form of the allowed urls above, written out by hand. */
function graphForm(url: string): string {
  const forms: Record<string, string> = {
    '/me': '/me',
    me: '/me',
    '/me/messages?$top=1': '/me/messages?$top=1',
    '/v1.0/me': '/me',
    'v1.0/me/memberOf': '/me/memberOf',
    '/api/graph/v1.0/me/photo/$value': '/me/photo/$value',
    '/me/': '/me',
    '/me?$select=id,displayName': '/me?$select=id,displayName',
  };
  const form = forms[url];
  if (form === undefined) throw new Error(`no Graph form for ${url}`);
  return form;
}

function hasCaseInsensitiveTwins(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(hasCaseInsensitiveTwins);
  if (typeof value !== 'object' || value === null) return false;
  const names = Object.keys(value).map((name) => name.toLowerCase());
  return new Set(names).size !== names.length || Object.values(value).some(hasCaseInsensitiveTwins);
}
