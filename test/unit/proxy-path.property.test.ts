import { expect } from 'chai';
import fc from 'fast-check';
import { ApiError } from '../../api/errors.js';
import { compileAllowList, pathPatternProblem } from '../../api/downstream/path-allow-list.js';
import { parseProxyPath, type ProxyPath } from '../../api/downstream/proxy-path.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
const counts: Record<string, number> = {};
/** Runs a property with RUNS cases and counts them (printed after the suite, for the closing note). */
function check<T>(name: string, property: fc.IProperty<T>): void {
  counts[name] = RUNS;
  fc.assert(property, { numRuns: RUNS });
}

/**
 * The reference matcher: the pattern language of path-allow-list.ts written as plainly as
 * possible (exponential, so only for short inputs). `**` takes zero or more non-empty segments,
 * `*` any characters of one segment, anything else itself.
 */
function referenceAllows(patterns: readonly string[], path: string): boolean {
  return patterns.some((pattern) => {
    if (pattern === '/') return path === '/';
    if (path !== '' && !path.startsWith('/')) return false;
    const wanted = pattern.slice(1).split('/');
    const segments = path === '' ? [] : path.slice(1).split('/');
    const match = (i: number, j: number): boolean => {
      if (i === wanted.length) return j === segments.length;
      if (wanted[i] === '**') return match(i + 1, j) || (j < segments.length && segments[j] !== '' && match(i, j + 1));
      return j < segments.length && globSegment(wanted[i] as string, segments[j] as string) && match(i + 1, j + 1);
    };
    return match(0, 0);
  });
}

function globSegment(pattern: string, text: string): boolean {
  if (pattern === '') return text === '';
  if (pattern[0] === '*') return [...Array(text.length + 1).keys()].some((skip) => globSegment(pattern.slice(1), text.slice(skip)));
  return text[0] === pattern[0] && globSegment(pattern.slice(1), text.slice(1));
}

/**
 * What a downstream that normalises and decodes as the WHATWG URL parser does (dot segments,
 * `%2e`, backslashes) would take the forwarded path for: its segments, decoded.
 */
function downstreamView(raw: string): { host: string; segments: string[] } {
  const url = new URL(`https://downstream.example/base${raw}`);
  const path = url.pathname.startsWith('/base/') ? url.pathname.slice('/base'.length) : `outside:${url.pathname}`;
  const segments = path.slice(1).split('/');
  if (segments.at(-1) === '') segments.pop();
  return { host: url.host, segments: segments.map((segment) => decodeURIComponent(segment)) };
}

/** A proxied path as a caller could send it: plain, encoded, dotted, doubled, unicode, broken. */
const PLAIN = [
  'v1.0',
  'beta',
  'me',
  'messages',
  'users',
  'u1',
  'photo',
  '$value',
  '$batch',
  'drive',
  'root:',
  'a*b',
  '*',
  '**',
  'é',
  '日本',
  '😀',
  '%C3%A9',
  '%20',
  'a b',
  ';',
  'me;x=1',
  '%3F',
  '%23',
  '~',
  '@',
  'user@evil.example',
  ':443',
  '%25',
  '%2e',
  'a.b',
  '...',
];
const HOSTILE = [
  '.',
  '..',
  '%2e',
  '%2E',
  '%2e%2e',
  '.%2e',
  '%2e.',
  '%252e%252e',
  '%252f',
  '%',
  '%z',
  '%zz',
  '%2',
  '%2f',
  '%2F',
  '%5c',
  '%5C',
  '..%2f',
  '%2e%2e%5c',
  'me%2fmessages',
  '\\',
  '\u202e',
  '%ED%A0%80',
  '%C0%AF',
  '%u002e',
  '%00',
  '\u0000',
  '%0a',
  '\t',
  '%7f',
  'http:',
  'https:',
  'HTTP:',
  'javascript:',
  '//evil.example',
];
const segment = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...PLAIN) },
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 6 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...PLAIN, ...HOSTILE), { minLength: 2, maxLength: 3 }).map((parts) => parts.join('')) },
);
const separator = fc.oneof(
  { weight: 12, arbitrary: fc.constant('/') },
  { weight: 1, arbitrary: fc.constantFrom('//', '\\', '/./', '/../', '/%2e/') },
);
/** `?` and `#` never reach the checker: koa's ctx.path ends before them. */
const rawPath = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('/', '/v1.0/', '/v1.0/me/', '/beta/me/') },
      { weight: 1, arbitrary: fc.constantFrom('', '//', '\\', 'v1.0/') },
    ),
    fc.array(fc.tuple(segment, separator), { maxLength: 6 }),
    fc.boolean(),
  )
  .map(([lead, parts, trailing]) => {
    const body = parts.map(([text, sep], i) => (i === parts.length - 1 ? text : `${text}${sep}`)).join('');
    return `${lead}${body}${trailing ? '/' : ''}`.replace(/\?/g, '%3F').replace(/#/g, '%23');
  });

/** Allow-lists: the default Graph one, and generated patterns (valid ones only, as configuration insists). */
const patternSegment = fc.constantFrom('v1.0', 'beta', 'me', 'messages', 'users', '*', '**', 'u*', '*1', 'a*b', '$batch', 'photo', '$value', 'é');
const pattern = fc.oneof(
  fc.constant('/'),
  fc.array(patternSegment, { minLength: 1, maxLength: 5 }).map((segments) => `/${segments.join('/')}`),
);
const allowList = fc.oneof(
  fc.constant(['/v1.0/me', '/v1.0/me/**', '/beta/me/**']),
  fc.array(pattern, { minLength: 1, maxLength: 3 }).filter((patterns) => patterns.every((p) => pathPatternProblem(p) === undefined)),
);

function parseOrRefuse(raw: string): ProxyPath | undefined {
  try {
    return parseProxyPath(raw);
  } catch (error) {
    // A refusal is one of ours (a 4xx with a code), never a TypeError or a URIError.
    expect(error, `${JSON.stringify(raw)} threw ${String(error)}`).to.be.instanceOf(ApiError);
    expect((error as ApiError).status).to.equal(400);
    return undefined;
  }
}

describe('property: the proxy path checker with the allow-list (fast-check)', () => {
  after(() => console.log(`      proxy path properties, cases run: ${JSON.stringify(counts)}`));

  it('never throws anything but a 400 ApiError, and an accepted path is the path the downstream sees', () =>
    check(
      'checker',
      fc.property(rawPath, (raw) => {
        const path = parseOrRefuse(raw);
        if (!path) return;
        expect(path.decoded).to.equal(`/${path.segments.join('/')}`);
        expect(
          path.segments.every((s) => s !== '' && s !== '.' && s !== '..' && !s.includes('/')),
          raw,
        ).to.equal(true);
        const seen = downstreamView(path.raw);
        expect(seen.host, raw).to.equal('downstream.example');
        expect(seen.segments, raw).to.deep.equal(path.segments);
      }),
    ));

  it('never lets a path through that the reference matcher refuses, as the downstream would read it', () =>
    check(
      'checker+allow-list',
      fc.property(allowList, rawPath, (patterns, raw) => {
        const path = parseOrRefuse(raw);
        if (!path) return;
        const allowed = compileAllowList(patterns)(path.decoded);
        const asSeen = `/${downstreamView(path.raw).segments.join('/')}`;
        expect(allowed, `${JSON.stringify(patterns)} ${JSON.stringify(raw)}`).to.equal(referenceAllows(patterns, asSeen));
      }),
    ));

  it('the linear matcher decides exactly as the reference matcher', () => {
    const pathSegment = fc.constantFrom('v1.0', 'beta', 'me', 'messages', 'u1', 'u', '1', 'ab', 'aXb', 'a', 'b', '$batch', '', 'é', '*');
    const path = fc.oneof(
      fc.constant(''),
      fc.constant('/'),
      fc.array(pathSegment, { maxLength: 7 }).map((segments) => `/${segments.join('/')}`),
    );
    return check(
      'matcher',
      fc.property(allowList, path, (patterns, candidate) => {
        expect(compileAllowList(patterns)(candidate), `${JSON.stringify(patterns)} ${JSON.stringify(candidate)}`).to.equal(
          referenceAllows(patterns, candidate),
        );
      }),
    );
  });
});
