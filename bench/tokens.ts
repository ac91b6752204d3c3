/**
 * Incoming tokens for the benchmark: one per user, each a distinct partition of the cache.
 * Minted by the emulator (RS256, about 1 ms each) in the bench process, handed to the load
 * process through a file, one token per line.
 */
import { appendFile, writeFile } from 'node:fs/promises';
import type { Emulator } from '../test/emulator/index.js';

/** Longer than any run, shorter than the 28 h the service accepts. */
const LIFETIME_SECONDS = 4 * 3600;
const BATCH = 5_000;

/** The oid of synthetic user `index` (the emulator accepts any GUID with `syntheticUsers`). */
function syntheticOid(index: number): string {
  return `5e000000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
}

/** A new token of synthetic user `index` (a new partition: its first use is an exchange). */
function mintToken(emulator: Emulator, index: number): string {
  return emulator.mint({ extraClaims: { oid: syntheticOid(index) }, lifetimeSeconds: LIFETIME_SECONDS });
}

/**
 * Makes the file hold tokens for users 0 … `count` - 1, minting only those not in it yet
 * (`have` of them are). Returns the seconds spent.
 */
export async function mintTokens(emulator: Emulator, file: string, have: number, count: number, progress: (done: number) => void): Promise<number> {
  const started = performance.now();
  if (have === 0) await writeFile(file, '', { mode: 0o600 });
  for (let from = have; from < count; from += BATCH) {
    const lines: string[] = [];
    for (let i = from; i < Math.min(from + BATCH, count); i++) {
      lines.push(mintToken(emulator, i));
    }
    await appendFile(file, `${lines.join('\n')}\n`);
    progress(from + lines.length);
  }
  return (performance.now() - started) / 1000;
}
