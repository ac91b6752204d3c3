import { expect } from 'chai';
import { allServiceLogs, configuredSecrets } from './support/service.js';

const JWT_SHAPED = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

/**
 * A root-level hook: after the whole suite, every log line any test service wrote is scanned.
 * Nothing JWT-shaped (incoming tokens, Graph tokens, assertions) and no configured secret.
 */
after('no token or secret in any log line of the whole suite', function () {
  expect(allServiceLogs.length, 'the suite produced logs to scan').to.be.greaterThan(0);
  for (const line of allServiceLogs) {
    expect(JWT_SHAPED.test(line), `a JWT-shaped string in: ${line.slice(0, 200)}`).to.equal(false);
    for (const secret of configuredSecrets) expect(line.includes(secret), 'a configured secret in a log line').to.equal(false);
  }
});

describe('the log scan itself', () => {
  it('would catch a JWT-shaped string', () => {
    expect(JWT_SHAPED.test('{"msg":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}')).to.equal(true);
    expect(JWT_SHAPED.test('{"msg":"request","requestId":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"}')).to.equal(false);
  });
});
