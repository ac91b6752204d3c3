import { expect } from 'chai';
import fc from 'fast-check';
import { parseStrictJsonObject } from '../../middleware/bearer/strict-json.js';

/** Cases per property: FUZZ_RUNS (npm run fuzz sets more), else a bound that keeps npm test quick. */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);

/** A JSON value written by hand, so objects can hold duplicate names; `duplicated`: some object does. */
interface Written {
  text: string;
  duplicated: boolean;
}

/** Member names as JSON may spell them: the same name plain or escaped, quotes and backslashes inside. */
const NAMES: [name: string, spelling: string][] = [
  ['a', '"a"'],
  ['a', '"\\u0061"'],
  ['b', '"b"'],
  ['a"b', '"a\\"b"'],
  ['a\\', '"a\\\\"'],
  ['é', '"é"'],
  ['é', '"\\u00e9"'],
  ['', '""'],
];

const written: fc.Arbitrary<Written> = fc.letrec<{ value: Written }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom<Written>({ text: '1', duplicated: false }, { text: '"x,{}[]:\\"y"', duplicated: false }, { text: 'null', duplicated: false }),
    fc
      .array(tie('value'), { maxLength: 4 })
      .map((items) => ({ text: `[${items.map((i) => i.text).join(',')}]`, duplicated: items.some((i) => i.duplicated) })),
    fc.array(fc.tuple(fc.constantFrom(...NAMES), tie('value')), { maxLength: 4 }).map((members) => {
      const names = members.map(([[name]]) => name);
      return {
        text: `{${members.map(([[, spelling], value]) => `${spelling} : ${value.text}`).join(' , ')}}`,
        duplicated: new Set(names).size < names.length || members.some(([, value]) => value.duplicated),
      };
    }),
  ),
})).value;

describe('parseStrictJsonObject (no duplicate member names anywhere)', () => {
  it('refuses exactly the objects in which some object repeats a name, however the name is spelled', () => {
    fc.assert(
      fc.property(written, (value) => {
        fc.pre(value.text.startsWith('{'));
        const parsed = parseStrictJsonObject(value.text);
        if (value.duplicated) expect(parsed, value.text).to.equal(undefined);
        else expect(parsed, value.text).to.deep.equal(JSON.parse(value.text));
      }),
      { numRuns: RUNS },
    );
  });

  it('refuses what is not one JSON object', () => {
    for (const text of ['', '[]', '1', 'null', '"{}"', '{', '{"a":1}x', '{"a":1}{"b":2}'])
      expect(parseStrictJsonObject(text), text).to.equal(undefined);
  });
});
