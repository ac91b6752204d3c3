import { setTimeout as sleep } from 'node:timers/promises';

/** The one sleep of the tests: node's own promise timer. */
export { sleep };

/**
 * Polls `condition` every `intervalMs` until it holds; throws naming `what` after `timeoutMs`.
 * For state that changes in the background (a reconnect, a log line, a child process), never
 * for time passing: where the code takes a clock, move the clock instead.
 */
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 5_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
