/**
 * Path patterns of a downstream's allow-list (`GRAPH_ALLOWED_PATHS`, `allowedPaths`):
 * `/`-separated segments matched against the decoded path, case-sensitively.
 * - `**` as a whole segment: any number of further segments, none included
 *   (`/v1.0/me/**` matches `/v1.0/me`, `/v1.0/me/messages`, `/v1.0/me/photo/$value`);
 * - `*` inside a segment: any characters except `/` (`/v1.0/users/*` matches one user);
 * - anything else: itself.
 */
export type PathAllowList = (path: string) => boolean;

/** Why `pattern` is not a valid pattern, or undefined when it is. */
export function pathPatternProblem(pattern: string): string | undefined {
  if (!pattern.startsWith('/')) return `"${pattern}" must start with /`;
  const segments = pattern.slice(1).split('/');
  if (pattern !== '/' && segments.some((segment) => segment === '')) return `"${pattern}" has an empty segment`;
  if (segments.some((segment) => segment === '.' || segment === '..')) return `"${pattern}" has a . or .. segment`;
  if (segments.some((segment) => segment.includes('**') && segment !== '**')) return `"${pattern}": ** must be a whole segment`;
  if (/[?#%\\\s]/.test(pattern)) return `"${pattern}" may not contain ?, #, %, \\ or spaces (patterns match decoded paths)`;
  return undefined;
}

/** Compiles valid patterns (see pathPatternProblem) into one matcher. */
export function compileAllowList(patterns: readonly string[]): PathAllowList {
  const compiled = patterns.map(compilePattern);
  return (path) => {
    // As the pattern, the path is `/`-separated segments ('' for the root's one empty segment).
    if (path !== '' && !path.startsWith('/')) return false;
    const segments = path === '' ? [] : path.slice(1).split('/');
    return compiled.some((pattern) => matchSegments(pattern, segments));
  };
}

/** One segment of a pattern: `**`, or the literal pieces between its `*`s. */
type PatternSegment = { anySegments: true } | { anySegments: false; pieces: string[] };

function compilePattern(pattern: string): PatternSegment[] {
  if (pattern === '/') return [{ anySegments: false, pieces: [''] }];
  return pattern
    .slice(1)
    .split('/')
    .map((segment) => (segment === '**' ? { anySegments: true } : { anySegments: false, pieces: segment.split('*') }));
}

/**
 * The pattern as an automaton over segments, run on the set of its states at once (no
 * backtracking): O(pattern × path). State i means "the first i pattern segments are matched";
 * a `**` may stay on its state by taking one more (non-empty) segment, or be passed for free.
 */
function matchSegments(pattern: PatternSegment[], segments: string[]): boolean {
  let current = new Uint8Array(pattern.length + 1);
  let next = new Uint8Array(pattern.length + 1);
  enter(pattern, current, 0);
  for (const segment of segments) {
    next.fill(0);
    let alive = false;
    for (let state = 0; state < pattern.length; state += 1) {
      if (current[state] === 0) continue;
      const element = pattern[state] as PatternSegment;
      if (element.anySegments ? segment !== '' : matchSegment(element.pieces, segment)) {
        enter(pattern, next, element.anySegments ? state : state + 1);
        alive = true;
      }
    }
    if (!alive) return false;
    const done = current;
    current = next;
    next = done;
  }
  return current[pattern.length] === 1;
}

/** Marks `state`, and the states after it that passing its `**`s reaches. */
function enter(pattern: PatternSegment[], states: Uint8Array, state: number): void {
  for (let at = state; at < states.length && states[at] === 0; at += 1) {
    states[at] = 1;
    if (!pattern[at]?.anySegments) return;
  }
}

/**
 * One segment against `pieces` (the segment pattern split at its `*`s): the first piece is a
 * prefix, the last a suffix, the middle ones found leftmost in order. Linear in the segment.
 */
function matchSegment(pieces: string[], segment: string): boolean {
  if (pieces.length === 1) return segment === pieces[0];
  const first = pieces[0] as string;
  const last = pieces.at(-1) as string;
  if (segment.length < first.length + last.length || !segment.startsWith(first) || !segment.endsWith(last)) return false;
  let at = first.length;
  const end = segment.length - last.length;
  for (const piece of pieces.slice(1, -1)) {
    const found = segment.indexOf(piece, at);
    if (found < 0 || found + piece.length > end) return false;
    at = found + piece.length;
  }
  return true;
}
