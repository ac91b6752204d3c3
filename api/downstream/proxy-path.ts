import { InvalidPathError } from '../errors.js';

/** A proxied path that cannot leave the downstream: checked, and decoded for the allow-list. */
export interface ProxyPath {
  /** As the caller sent it (percent-encoding kept): what is forwarded. */
  raw: string;
  /** Decoded segments, without a trailing empty one. */
  segments: string[];
  /** `/` + the decoded segments: what the allow-list matches. */
  decoded: string;
}

const SCHEME = /^[a-z][a-z0-9+.-]*:/i;
const STILL_ENCODED = /%[0-9a-f]{2}/i;

/**
 * Checks the path under a proxy prefix (`/v1.0/me/messages`). Anything that could make the
 * downstream see another path than the allow-list saw, or another host, is a 400:
 * `.`/`..` segments (also encoded), encoded slashes or backslashes, backslashes, empty segments
 * (`//host`), an absolute URL, control characters, double encoding, malformed escapes.
 */
export function parseProxyPath(raw: string): ProxyPath {
  const path = raw === '' ? '/' : raw;
  if (!path.startsWith('/')) throw new InvalidPathError('The path must start with /.');
  if (path.includes('\\') || /%5c/i.test(path)) throw new InvalidPathError('The path may not contain backslashes.');
  if (/%2f/i.test(path)) throw new InvalidPathError('The path may not contain encoded slashes.');
  if (path.includes('//')) throw new InvalidPathError('The path may not contain empty segments.');
  const rawSegments = path.slice(1).split('/');
  if (rawSegments.at(-1) === '') rawSegments.pop();
  const segments = rawSegments.map(decodeSegment);
  if (segments[0] !== undefined && SCHEME.test(segments[0])) throw new InvalidPathError('The path may not be an absolute URL.');
  return { raw: path, segments, decoded: `/${segments.join('/')}` };
}

function decodeSegment(segment: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    throw new InvalidPathError('The path has a malformed percent-encoding.');
  }
  if (decoded === '.' || decoded === '..') throw new InvalidPathError('The path may not contain . or .. segments.');
  if (hasControlCharacter(decoded)) throw new InvalidPathError('The path may not contain control characters.');
  if (STILL_ENCODED.test(decoded)) throw new InvalidPathError('The path may not be encoded twice.');
  return decoded;
}

/** C0 controls (U+0000–U+001F) and DEL (U+007F); compared by code so no raw control sits in a regex. */
function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code <= 0x1f || code === 0x7f) return true;
  }
  return false;
}
