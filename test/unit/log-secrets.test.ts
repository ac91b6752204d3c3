import { expect } from 'chai';
import { assertNoSecretsIn, JWT_SHAPED } from '../support/log-scan.js';

// The scan itself runs after every run as a root hook (test/support/log-scan.ts).
describe('the log scan itself', () => {
  it('would catch a JWT-shaped string', () => {
    expect(JWT_SHAPED.test('{"msg":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}')).to.equal(true);
    expect(JWT_SHAPED.test('{"msg":"request","requestId":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"}')).to.equal(false);
  });

  it('fails on a token or a configured secret in a log line, and passes clean lines', () => {
    expect(() => assertNoSecretsIn(['{"msg":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}'], [])).to.throw();
    expect(() => assertNoSecretsIn(['{"msg":"boot","detail":"s3cr3t-value"}'], ['s3cr3t-value'])).to.throw();
    expect(() => assertNoSecretsIn(['{"msg":"request","status":200}'], ['s3cr3t-value'])).not.to.throw();
  });
});
