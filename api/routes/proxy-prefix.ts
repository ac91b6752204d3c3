/**
 * The proxy's route shape, written once: `/api/graph/<path>` is Graph, `/api/downstream/<name>/<path>`
 * any configured downstream (the name is group 1). Matches the prefix up to the `/` that starts
 * `<path>`. The router mounts the proxy on it, the proxy splits paths with it, and the docs
 * page's script is built from its source.
 */
export const PROXY_PREFIX = /^\/api\/(?:graph|downstream\/([^/]+))(?=\/)/;
