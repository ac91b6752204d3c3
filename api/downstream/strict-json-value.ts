/**
 * A JSON reader that leaves nothing to interpretation, for bodies we check and then forward:
 * well-formed UTF-8 JSON (RFC 8259) only, no member name twice in one object (compared
 * case-insensitively, as OData's reader compares them), nesting bounded, and numbers kept as
 * written so that writing the value out again changes nothing a reader could see.
 */
export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

/** A number as its literal text (`12345678901234567890` stays exact). */
class JsonNumber {
  constructor(readonly literal: string) {}
}

/** An object's members in order, keyed by the lower-cased name (each name once). */
export class JsonObject {
  constructor(readonly members: ReadonlyMap<string, { name: string; value: JsonValue }>) {}

  /** The member whose name equals `name` ignoring case. */
  get(name: string): JsonValue | undefined {
    return this.members.get(name.toLowerCase())?.value;
  }
}

export class JsonSyntaxError extends Error {}

/** Deeper than any Graph resource nests; bounds the stack of reader and writer alike. */
const MAX_DEPTH = 64;
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** Parses `bytes` as one JSON value; anything else is a JsonSyntaxError. */
export function parseStrictJson(bytes: Uint8Array): JsonValue {
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    throw new JsonSyntaxError('The body is not valid UTF-8.');
  }
  let at = 0;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(`The JSON is not valid: ${what} at character ${at}.`);
  };
  const skipSpace = () => {
    while (at < text.length && ' \t\n\r'.includes(text.charAt(at))) at++;
  };
  const string = (): string => {
    const start = at;
    for (at++; at < text.length; at++) {
      const code = text.charCodeAt(at);
      if (code === 0x22) {
        at++;
        return JSON.parse(text.slice(start, at)) as string;
      }
      if (code < 0x20) fail('a control character in a string');
      if (code === 0x5c) {
        const escape = text.charAt(at + 1);
        if (escape === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(at + 2, at + 6))) fail('a malformed \\u escape');
          at += 5;
        } else if ('"\\/bfnrt'.includes(escape) && escape !== '') at++;
        else fail('a malformed escape');
      }
    }
    return fail('an unterminated string');
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
    skipSpace();
    const char = text.charAt(at);
    if (char === '"') return string();
    if (char === '{') {
      at++;
      const members = new Map<string, { name: string; value: JsonValue }>();
      skipSpace();
      if (text.charAt(at) === '}') {
        at++;
        return new JsonObject(members);
      }
      for (;;) {
        skipSpace();
        if (text.charAt(at) !== '"') fail('a member name expected');
        const name = string();
        const key = name.toLowerCase();
        if (members.has(key)) fail(`the member name "${printable(name)}" given twice`);
        skipSpace();
        if (text.charAt(at) !== ':') fail('":" expected');
        at++;
        members.set(key, { name, value: value(depth + 1) });
        skipSpace();
        const next = text.charAt(at++);
        if (next === '}') return new JsonObject(members);
        if (next !== ',') fail('"," or "}" expected');
      }
    }
    if (char === '[') {
      at++;
      const items: JsonValue[] = [];
      skipSpace();
      if (text.charAt(at) === ']') {
        at++;
        return items;
      }
      for (;;) {
        items.push(value(depth + 1));
        skipSpace();
        const next = text.charAt(at++);
        if (next === ']') return items;
        if (next !== ',') fail('"," or "]" expected');
      }
    }
    for (const [literal, parsed] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(literal, at)) {
        at += literal.length;
        return parsed;
      }
    }
    NUMBER.lastIndex = at;
    const number = NUMBER.exec(text);
    if (!number) return fail('a value expected');
    at += number[0].length;
    return new JsonNumber(number[0]);
  };
  const parsed = value(0);
  skipSpace();
  if (at !== text.length) fail('more text after the value');
  return parsed;
}

/** The JSON text of a value (compact; names and numbers as they were read). */
export function writeJson(value: JsonValue): string {
  if (value instanceof JsonNumber) return value.literal;
  if (value instanceof JsonObject) {
    return `{${[...value.members.values()].map((member) => `${JSON.stringify(member.name)}:${writeJson(member.value)}`).join(',')}}`;
  }
  if (Array.isArray(value)) return `[${value.map(writeJson).join(',')}]`;
  return JSON.stringify(value);
}

/** Caller text inside our messages: short, and never a `"`. */
export function printable(text: string): string {
  return text.replace(/[^\w.:@$-]/g, '_').slice(0, 64);
}
