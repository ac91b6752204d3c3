import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Context } from 'koa';
import { NotFoundError } from '../errors.js';
import { PROXY_PREFIX } from './proxy-prefix.js';

/** swagger-ui-dist, from node_modules: the reference page works offline and with no CDN. */
const SWAGGER_UI_DIR = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

/** The only files served from it (by name: nothing else of the package, no paths). A Map: no prototype to walk. */
const ASSETS = new Map<string, string>([
  ['swagger-ui.css', 'text/css; charset=utf-8'],
  ['swagger-ui-bundle.js', 'text/javascript; charset=utf-8'],
  ['favicon-32x32.png', 'image/png'],
  ['favicon-16x16.png', 'image/png'],
]);

/** Our replacement for the package's swagger-initializer.js: a file, so the page needs no inline script. */
const INITIALIZER_FILE = 'docs-initializer.js';
const INITIALIZER = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    // A proxied {path} spans segments (x-multi-segment): send its slashes, not %2F (a 400 here).
    requestInterceptor: function (request) {
      var url = new URL(request.url, window.location.href);
      var proxied = /${PROXY_PREFIX.source}/.exec(url.pathname);
      if (proxied) {
        var at = proxied[0].length;
        url.pathname = url.pathname.slice(0, at) + url.pathname.slice(at).replace(/%2F/gi, '/');
        request.url = url.href;
      }
      return request;
    }
  });
});
`;

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>OBO middle-tier API reference</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script src="/docs/${INITIALIZER_FILE}"></script>
  </body>
</html>
`;

/** Scripts and styles only from here (Swagger UI styles elements through the CSSOM); data: images are its icons. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** GET /docs: the API reference (Swagger UI) for /openapi.json. */
export function docsPageRoute() {
  return function docsPage(ctx: Context): void {
    ctx.set('content-security-policy', CONTENT_SECURITY_POLICY);
    ctx.set('cache-control', 'no-cache');
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = PAGE;
  };
}

/** GET /docs/<file>: Swagger UI's own files, and our initializer. */
export function docsAssetRoute() {
  return function docsAsset(ctx: Context): void {
    const file = (ctx.params as Record<string, string | undefined>)['file'] ?? '';
    ctx.set('cache-control', 'public, max-age=3600');
    if (file === INITIALIZER_FILE) {
      ctx.type = 'text/javascript; charset=utf-8';
      ctx.body = INITIALIZER;
      return;
    }
    const type = ASSETS.get(file);
    if (type === undefined) throw new NotFoundError();
    ctx.type = type;
    ctx.body = createReadStream(join(SWAGGER_UI_DIR, file));
  };
}
