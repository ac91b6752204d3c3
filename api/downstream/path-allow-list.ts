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
  const expressions = patterns.map(patternExpression);
  return (path) => expressions.some((expression) => expression.test(path));
}

function patternExpression(pattern: string): RegExp {
  if (pattern === '/') return /^\/$/;
  const body = pattern
    .slice(1)
    .split('/')
    .map((segment) => (segment === '**' ? '(?:/[^/]+)*' : `/${segment.split('*').map(escapeRegExp).join('[^/]*')}`))
    .join('');
  return new RegExp(`^${body}$`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
