import { expect } from 'chai';
import { allServiceLogs, configuredSecrets } from './service.js';

/** A JWT's first two segments: `{"` base64url-encoded starts every header and payload. */
export const JWT_SHAPED = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

/** Throws on the first log line that holds something JWT-shaped or a configured secret. */
export function assertNoSecretsIn(lines: readonly string[], secrets: Iterable<string>): void {
  const secretList = [...secrets];
  for (const line of lines) {
    expect(JWT_SHAPED.test(line), `a JWT-shaped string in: ${line.slice(0, 200)}`).to.equal(false);
    for (const secret of secretList) expect(line.includes(secret), 'a configured secret in a log line').to.equal(false);
  }
}

/**
 * A mocha root-hook plugin (loaded through .mocharc.json): after every run, filtered or not,
 * every log line that any test service wrote is scanned for tokens and configured secrets.
 */
export const mochaHooks = {
  afterAll(): void {
    assertNoSecretsIn(allServiceLogs, configuredSecrets);
  },
};
