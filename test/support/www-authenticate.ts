/** Parses `Bearer k="v", k2="v2"` into its scheme and parameters (tests never compare whole headers). */
export function parseChallenge(header: string | undefined): { scheme: string; params: Record<string, string> } {
  if (!header) throw new Error('no WWW-Authenticate header');
  const match = /^(\S+)(?:\s+(.*))?$/.exec(header.trim());
  if (!match) throw new Error(`unparseable challenge: ${header}`);
  const params: Record<string, string> = {};
  const pattern = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)/g;
  for (const [, name, quoted, token] of (match[2] ?? '').matchAll(pattern)) {
    if (name === undefined) continue;
    if (name in params) throw new Error(`parameter ${name} appears twice`);
    params[name] = quoted ?? token ?? '';
  }
  return { scheme: match[1] ?? '', params };
}
