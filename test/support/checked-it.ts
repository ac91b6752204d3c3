/**
 * `it`, with checks that every test of a block ends with.
 *
 *   const itNoExchange = itChecking(() => expect(emulator.counters.token).to.equal(0));
 *   itNoExchange('#13 not three segments', async () => { … });
 *   const itNoJwks = itNoExchange.and(() => expect(emulator.counters.jwks).to.equal(0));
 *
 * The checks run inside the test, after its body passed: a failure fails that test and names it.
 * (In an afterEach hook it would fail the hook instead, and mocha skips the rest of the block.)
 */
type Check = () => unknown;
type Body = (this: Mocha.Context) => unknown;

export interface CheckedIt {
  (title: string, body: Body): Mocha.Test;
  only(title: string, body: Body): Mocha.Test;
  /** The same checks and then `more`. */
  and(...more: Check[]): CheckedIt;
}

export function itChecking(...checks: Check[]): CheckedIt {
  const wrap = (body: Body) =>
    async function (this: Mocha.Context): Promise<void> {
      await body.call(this);
      for (const check of checks) await check();
    };
  return Object.assign((title: string, body: Body) => it(title, wrap(body)), {
    only: (title: string, body: Body) => it.only(title, wrap(body)),
    and: (...more: Check[]) => itChecking(...checks, ...more),
  });
}
