import { expect } from 'chai';
import fc from 'fast-check';
import { isCanonicalBase64url } from '../../middleware/bearer/canonical-base64url.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The definition: decoding and encoding again gives the same text. */
const roundTrips = (segment: string): boolean =>
  /^[A-Za-z0-9_-]+$/.test(segment) && Buffer.from(segment, 'base64url').toString('base64url') === segment;

describe('isCanonicalBase64url (a JWT segment exactly as an encoder writes it)', () => {
  it('agrees with a decode and re-encode round trip on any string of base64url characters, and near misses', () => {
    const segment = fc.oneof(
      fc.string({ unit: fc.constantFrom(...ALPHABET), minLength: 0, maxLength: 64 }),
      fc.string({ unit: fc.constantFrom(...ALPHABET, '=', '+', '/', '.', ' '), minLength: 1, maxLength: 16 }),
    );
    fc.assert(
      fc.property(segment, (text) => {
        expect(isCanonicalBase64url(text), JSON.stringify(text)).to.equal(roundTrips(text));
      }),
      { numRuns: RUNS },
    );
  });

  it('accepts every encoding of bytes, and refuses it with any other last character that decodes the same', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 48 }), fc.constantFrom(...ALPHABET), (bytes, last) => {
        const encoded = Buffer.from(bytes).toString('base64url');
        expect(isCanonicalBase64url(encoded)).to.equal(true);
        const changed = encoded.slice(0, -1) + last;
        if (changed !== encoded) expect(isCanonicalBase64url(changed), changed).to.equal(roundTrips(changed));
      }),
      { numRuns: RUNS },
    );
  });
});
