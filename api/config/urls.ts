import { shown } from './shown.js';

export type UrlCheck = { href: string } | { problem: string };

/**
 * A base URL of a service we call or name (authority host, Graph, a downstream, the collector,
 * our public origin): one of `protocols`, without a query, a fragment, or a user or password.
 * None of these takes credentials in the URL, so one there is a mistake (and would be logged);
 * Redis URLs, which do take a password, are read elsewhere. The problem never shows userinfo.
 * `href` has no trailing slash.
 */
export function checkBaseUrl(value: string, protocols: readonly string[]): UrlCheck {
  const expected = `expected an ${protocols.join(' or ')} URL with no user, password, query or fragment`;
  const url = URL.canParse(value) ? new URL(value) : undefined;
  if (!url) return { problem: `${expected}, got "${shown(value)}"` };
  if (url.username || url.password) return { problem: `this URL takes no user or password, got "${withoutSecrets(url)}"` };
  if (!protocols.includes(url.protocol) || url.search || url.hash) return { problem: `${expected}, got "${withoutSecrets(url)}"` };
  return { href: url.href.replace(/\/+$/, '') };
}

/** The URL with its userinfo, query and fragment elided (a query may hold a signature). */
function withoutSecrets(url: URL): string {
  const userinfo = url.username || url.password ? '…@' : '';
  const rest = `${url.pathname}${url.search ? '?…' : ''}${url.hash ? '#…' : ''}`;
  return shown(`${url.protocol}//${userinfo}${url.host}${rest}`);
}
