/**
 * Parses a JSON object and refuses duplicate member names anywhere in it. JSON.parse (and so
 * jose) lets the last duplicate win, which lets a token say two things at once.
 * Returns undefined for anything that is not one well-formed JSON object without duplicates.
 */
export function parseStrictJsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  return hasDuplicateMembers(text) ? undefined : (value as Record<string, unknown>);
}

/**
 * Walks text already known to be valid JSON. For each open object it keeps the member names
 * seen so far; a string directly after `{` or `,` inside an object is a member name. Names
 * without escapes are compared as they are written (most are); escaped ones are unescaped first,
 * so `"a"` and `"\u0061"` are the same name.
 */
function hasDuplicateMembers(text: string): boolean {
  const scopes: (Set<string> | null)[] = []; // a Set for an object, null for an array
  let expectingName = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === QUOTE) {
      const { end, escaped } = endOfString(text, i);
      const current = scopes[scopes.length - 1];
      if (expectingName && current) {
        const name = escaped ? (JSON.parse(text.slice(i, end + 1)) as string) : text.slice(i + 1, end);
        if (current.has(name)) return true;
        current.add(name);
      }
      expectingName = false;
      i = end;
    } else if (code === OPEN_BRACE) {
      scopes.push(new Set());
      expectingName = true;
    } else if (code === OPEN_BRACKET) {
      scopes.push(null);
      expectingName = false;
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      scopes.pop();
      expectingName = false;
    } else if (code === COMMA) {
      expectingName = scopes[scopes.length - 1] != null;
    }
  }
  return false;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

/** Where the string starting at `start` ends (its closing quote), and whether it holds an escape. */
function endOfString(text: string, start: number): { end: number; escaped: boolean } {
  let escaped = false;
  for (let i = start + 1; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === BACKSLASH) {
      escaped = true;
      i++;
    } else if (code === QUOTE) return { end: i, escaped };
  }
  return { end: text.length - 1, escaped };
}
