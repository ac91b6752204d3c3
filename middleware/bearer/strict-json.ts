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
 * seen so far; a string directly after `{` or `,` inside an object is a member name.
 */
function hasDuplicateMembers(text: string): boolean {
  const scopes: (Set<string> | null)[] = []; // a Set for an object, null for an array
  let expectingName = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '"') {
      const end = endOfString(text, i);
      const current = scopes.at(-1);
      if (expectingName && current) {
        const name = JSON.parse(text.slice(i, end + 1)) as string;
        if (current.has(name)) return true;
        current.add(name);
      }
      expectingName = false;
      i = end;
    } else if (char === '{') {
      scopes.push(new Set());
      expectingName = true;
    } else if (char === '[') {
      scopes.push(null);
      expectingName = false;
    } else if (char === '}' || char === ']') {
      scopes.pop();
      expectingName = false;
    } else if (char === ',') {
      expectingName = scopes.at(-1) != null;
    }
  }
  return false;
}

function endOfString(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return text.length - 1;
}
