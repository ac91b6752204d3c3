import { expect } from 'chai';
import { compileAllowList, pathPatternProblem } from '../../api/downstream/path-allow-list.js';

/** Issue 10.5: the allow-list keeps its pattern language and decides any path in linear time. */
describe('the path allow-list (api/downstream/path-allow-list.ts)', () => {
  const matches = (patterns: string[], path: string) => compileAllowList(patterns)(path);

  it('`**` as a whole segment: any number of further segments, none included', () => {
    expect(matches(['/v1.0/me/**'], '/v1.0/me')).to.equal(true);
    expect(matches(['/v1.0/me/**'], '/v1.0/me/messages')).to.equal(true);
    expect(matches(['/v1.0/me/**'], '/v1.0/me/photo/$value')).to.equal(true);
    expect(matches(['/v1.0/me/**'], '/v1.0/meet')).to.equal(false);
    expect(matches(['/v1.0/me/**'], '/v1.0')).to.equal(false);
    expect(matches(['/v1.0/**/photo'], '/v1.0/photo')).to.equal(true);
    expect(matches(['/v1.0/**/photo'], '/v1.0/users/u1/photo')).to.equal(true);
    expect(matches(['/v1.0/**/photo'], '/v1.0/users/u1/photo/x')).to.equal(false);
    expect(matches(['/**/x/**/y'], '/a/x/b/x/y')).to.equal(true);
    expect(matches(['/**/x/**/y'], '/a/x/b/y/c')).to.equal(false);
    expect(matches(['/**'], '/a/b/c')).to.equal(true);
  });

  it('`*` inside a segment: any characters except /', () => {
    expect(matches(['/v1.0/users/*'], '/v1.0/users/u1')).to.equal(true);
    expect(matches(['/v1.0/users/*'], '/v1.0/users/u1/manager')).to.equal(false);
    expect(matches(['/v1.0/users/*/photo'], '/v1.0/users/a@b.c/photo')).to.equal(true);
    expect(matches(['/v1.0/me/drive/items/*:*'], '/v1.0/me/drive/items/root:report.docx')).to.equal(true);
    expect(matches(['/v1.0/me/drive/items/*:*'], '/v1.0/me/drive/items/root')).to.equal(false);
    expect(matches(['/v1.0/a*b*c'], '/v1.0/abc')).to.equal(true);
    expect(matches(['/v1.0/a*b*c'], '/v1.0/aXbYbZc')).to.equal(true);
    expect(matches(['/v1.0/a*b*c'], '/v1.0/aXbYcZ')).to.equal(false);
  });

  it('anything else matches itself, case-sensitively and character by character', () => {
    expect(matches(['/v1.0/me'], '/v1.0/me')).to.equal(true);
    expect(matches(['/v1.0/me'], '/v1.0/Me')).to.equal(false);
    expect(matches(['/v1.0/me'], '/v1x0/me'), 'a . is not a wildcard').to.equal(false);
    expect(matches(['/v1.0/me'], '/v1.0/me/')).to.equal(false);
    expect(matches(['/v1.0/$batch'], '/v1.0/$batch')).to.equal(true);
    expect(matches(['/v1.0/(a|b)+'], '/v1.0/(a|b)+')).to.equal(true);
    expect(matches(['/v1.0/(a|b)+'], '/v1.0/aa')).to.equal(false);
    expect(matches(['/'], '/')).to.equal(true);
    expect(matches(['/'], '/a')).to.equal(false);
    expect(matches([], '/v1.0/me')).to.equal(false);
    expect(matches(['/v1.0/me', '/beta/me/**'], '/beta/me/x')).to.equal(true);
  });

  it('keeps refusing invalid patterns at configuration time', () => {
    expect(pathPatternProblem('/v1.0/me/**')).to.equal(undefined);
    expect(pathPatternProblem('v1.0/me')).to.match(/must start with/);
    expect(pathPatternProblem('/v1.0//me')).to.match(/empty segment/);
    expect(pathPatternProblem('/v1.0/../me')).to.match(/\.\. segment/);
    expect(pathPatternProblem('/v1.0/me**')).to.match(/whole segment/);
    expect(pathPatternProblem('/v1.0/me?x')).to.match(/may not contain/);
  });

  it('decides a pathological pattern (three `**`) against a path at the size limit in under 10 ms', () => {
    // Node's default limit for the request line and headers together is 16 KiB.
    const patterns = ['/v1.0/**/**/**/never', '/v1.0/**/a*a*a*a*a*a*b/**', '/**/**/**/**/x*y*z'];
    const allowed = compileAllowList(patterns);
    const paths = [`/v1.0${'/a'.repeat(8000)}`, `/v1.0/${'a'.repeat(16_000)}`, `/v1.0${'/aaaaaaaa'.repeat(1700)}/b`];
    // Warm once (a running service has compiled the matcher), then the best of five runs: the
    // machine may be loaded, and a backtracking matcher takes seconds here whatever the noise.
    expect(allowed('/v1.0/a/b')).to.equal(false);
    for (const path of paths) {
      let bestMs = Number.POSITIVE_INFINITY;
      for (let run = 0; run < 5; run += 1) {
        const started = performance.now();
        expect(allowed(path)).to.equal(false);
        bestMs = Math.min(bestMs, performance.now() - started);
      }
      expect(bestMs, `${path.length} characters`).to.be.below(10);
    }
  });
});
