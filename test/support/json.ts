import { AssertionError } from 'chai';

// A parsed JSON body (supertest's `response.body`, `JSON.parse`) is `any`. These read it as
// `unknown` one checked step at a time, so a test asserts on values, never on an unchecked shape.

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The value at `path` inside a JSON body: `at(response.body, 'error', 'code')`. Every step before
 * the last must be a JSON object, or the test fails there, naming the path.
 */
export function at(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const [i, key] of path.entries()) {
    if (!isObject(current)) {
      const where = path.slice(0, i).join('.') || 'the body';
      throw new AssertionError(`expected ${where} to be a JSON object with '${key}', got ${JSON.stringify(current)}`);
    }
    current = current[key];
  }
  return current;
}

/** A JSON array (`list(at(body, 'value'))`); anything else fails the test. */
export function list(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new AssertionError(`expected a JSON array, got ${JSON.stringify(value)}`);
  return value;
}
