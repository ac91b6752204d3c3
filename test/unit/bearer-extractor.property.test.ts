import { expect } from 'chai';
import fc from 'fast-check';
import { ApiError, InvalidRequestError, InvalidTokenError, MissingCredentialsError } from '../../api/errors.js';
import { MAX_TOKEN_BYTES, extractBearerToken } from '../../middleware/bearer/extract-bearer.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
const REALM = 'api://test';
/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** A token-ish string: b64token characters, a JWT shape, near-misses, unicode, huge. */
const B64_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/';
const b64token = fc
  .tuple(fc.string({ unit: fc.constantFrom(...B64_CHARS), minLength: 1, maxLength: 120 }), fc.string({ unit: fc.constant('='), maxLength: 3 }))
  .map(([body, padding]) => body + padding);
const NEAR_MISSES = ['"', ' ', '\t', ',', ';', '=', '\\', '\u00e9', '\u00a0', '\u2028', '😀', '\u0000', '\r', '\n', '%', '*', '(', '!'];
const tokenLike = fc.oneof(
  { weight: 6, arbitrary: b64token },
  { weight: 6, arbitrary: fc.tuple(b64token, b64token, b64token).map((parts) => parts.join('.')) },
  // A valid token with something inserted at some position.
  {
    weight: 3,
    arbitrary: fc
      .tuple(b64token, fc.constantFrom(...NEAR_MISSES), fc.nat())
      .map(([token, bad, at]) => token.slice(0, at % (token.length + 1)) + bad + token.slice(at % (token.length + 1))),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  // Around the length limit, and far beyond it.
  { weight: 1, arbitrary: fc.integer({ min: MAX_TOKEN_BYTES - 2, max: MAX_TOKEN_BYTES + 2 }).map((n) => 'a'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 9_000, max: 200_000 }).map((n) => 'eyJ'.repeat(n / 3)) },
);
const scheme = fc.oneof(
  { weight: 6, arbitrary: fc.constant('Bearer') },
  fc.constantFrom('Bearer', 'Bearer', 'Bearer', 'bearer', 'BEARER', 'BeArEr', 'Basic', 'DPoP', 'Token', 'Bearer:', 'Bearerx', 'Bear', ''),
  fc.constantFrom('Bearer', 'bearer').map((s) => `\u0000${s}`),
);
const separator = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(' ', ' ', '  ') },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom(' ', '\t', '\u00a0', '\u3000', ','), maxLength: 4 }) },
);
const headerValue = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(scheme, separator, tokenLike, fc.constantFrom('', '', '', '', ' x', ',', '\t')).map((parts) => parts.join('')) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 60 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'Bearer', 'Bearer ', 'bearer\t', 'Bearer  ') },
);
const authorizationName = fc.constantFrom(
  'Authorization',
  'Authorization',
  'Authorization',
  'Authorization',
  'authorization',
  'AUTHORIZATION',
  'aUtHoRiZaTiOn',
  'Authorisation',
  'X-Authorization',
  'Authorization ',
);
const otherHeader = fc.tuple(fc.constantFrom('Host', 'Accept', 'X-Request-Id', 'Cookie'), fc.string({ maxLength: 20 }));
const rawHeaders = fc
  .tuple(
    fc.oneof(
      { weight: 4, arbitrary: fc.tuple(authorizationName, headerValue).map((pair) => [pair]) },
      { weight: 1, arbitrary: fc.array(fc.tuple(authorizationName, headerValue), { maxLength: 3 }) },
    ),
    fc.array(otherHeader, { maxLength: 3 }),
  )
  .chain(([auth, other]) => fc.shuffledSubarray([...auth, ...other], { minLength: auth.length + other.length }))
  .map((pairs) => pairs.flat());
const querystring = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  fc.constantFrom(
    'access_token=abc',
    'a=1&access_token=',
    'access_token',
    '%61ccess_token=x',
    'ACCESS_TOKEN=x',
    'x=access_token',
    'access%5Ftoken=1',
  ),
  fc.string({ maxLength: 30 }),
);

function outcome(headers: readonly string[], query: string): { token: string } | { error: unknown } {
  try {
    return { token: extractBearerToken(headers, query, REALM) };
  } catch (error) {
    return { error };
  }
}
const authorizationValues = (headers: readonly string[]) =>
  headers.filter((_, i) => i % 2 === 1 && headers[i - 1]?.toLowerCase() === 'authorization');

describe('bearer extractor, tried in bulk (fast-check; checklist 1-10)', () => {
  const cases: Record<string, number> = {};
  after(() => {
    console.log(
      `      bearer extractor properties: ${Object.entries(cases)
        .map(([name, n]) => `${name} ${n}`)
        .join(', ')} cases`,
    );
  });

  it('never throws anything but our 400/401 errors, and accepts only one RFC 6750 b64token', () => {
    let accepted = 0;
    fc.assert(
      fc.property(rawHeaders, querystring, (headers, query) => {
        const result = outcome(headers, query);
        const values = authorizationValues(headers);
        if ('error' in result) {
          expect(result.error).to.be.instanceOf(ApiError);
          const error = result.error as ApiError;
          expect(error).to.satisfy(
            (e: ApiError) => e instanceof MissingCredentialsError || e instanceof InvalidRequestError || e instanceof InvalidTokenError,
          );
          expect([400, 401]).to.include(error.status);
          if (values.length > 1) expect(error).to.be.instanceOf(InvalidRequestError);
          return;
        }
        accepted++;
        const { token } = result;
        expect(values).to.have.length(1);
        expect(token).to.match(B64TOKEN);
        expect(token.length).to.be.at.most(MAX_TOKEN_BYTES);
        expect(values[0]).to.match(/^bearer +/i);
        expect(values[0]?.replace(/^bearer +/i, '')).to.equal(token);
        expect(new URLSearchParams(query).has('access_token')).to.equal(false);
      }),
      { numRuns: RUNS },
    );
    cases['shape'] = RUNS;
    cases['shape (accepted)'] = accepted;
    expect(accepted, 'some generated headers are well-formed').to.be.greaterThan(0);
  });

  it('accepts every well-formed header: any case of the scheme, one or more spaces, any b64token', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('Bearer', 'bearer', 'BEARER', 'bEaReR'),
        fc.integer({ min: 1, max: 5 }),
        b64token,
        authorizationName.filter((name) => name.toLowerCase() === 'authorization'),
        fc.constantFrom('', 'a=1', 'access=1&token=2'),
        (name, spaces, token, header, query) => {
          expect(extractBearerToken([header, `${name}${' '.repeat(spaces)}${token}`, 'Host', 'x'], query, REALM)).to.equal(token);
        },
      ),
      { numRuns: RUNS },
    );
    cases['well-formed'] = RUNS;
  });

  it('two Authorization headers, or a header and a query token, are invalid_request, whatever they hold', () => {
    fc.assert(
      fc.property(
        headerValue.filter((v) => v !== ''),
        headerValue,
        authorizationName,
        (first, second, name) => {
          const twice = outcome(['Authorization', first, name.toLowerCase() === 'authorization' ? name : 'authorization', second], '');
          expect('error' in twice && twice.error).to.be.instanceOf(InvalidRequestError);
          const both = outcome(['Authorization', first], 'access_token=x');
          expect('error' in both && both.error).to.be.instanceOf(InvalidRequestError);
        },
      ),
      { numRuns: RUNS },
    );
    cases['two methods'] = RUNS;
  });
});
