const LONGEST = 80;

/**
 * A value as a problem message may quote it. Whatever comes before its last `@` is hidden,
 * because that is where a URL keeps its user and password (`https://u:pw@host` shows as
 * `https://…@host`), whichever variable the URL was put in, and whether or not it parses.
 * Long values are cut.
 */
export function shown(value: string): string {
  const at = value.lastIndexOf('@');
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value)?.[0] ?? '';
  const visible = at < 0 ? value : `${scheme}…@${value.slice(at + 1)}`;
  return visible.length > LONGEST ? `${visible.slice(0, LONGEST)}…` : visible;
}
