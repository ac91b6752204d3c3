/**
 * The house's layering, checked by `npm run lint`. Data flows one way: request → middleware →
 * middleware/bearer → api/routes → api/token → cache → msal-node; api/downstream sits under the
 * routes. A folder imports only the layers below it.
 */
/** @type {import('dependency-cruiser').IDependencyCruiserConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'production-never-imports-tests',
      severity: 'error',
      from: { path: '^(api|middleware|cache)/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'cache-knows-no-http-and-no-msal',
      comment: 'The cache caches values, whatever they are: no koa, no msal-node, nothing of the service.',
      severity: 'error',
      from: { path: '^cache/' },
      to: { path: ['^(api|middleware)/', 'node_modules/(koa|@koa/|@azure/msal-node)'] },
    },
    {
      name: 'middleware-never-imports-the-cache-or-msal',
      severity: 'error',
      from: { path: '^middleware/' },
      to: { path: ['^cache/', 'node_modules/@azure/msal-node'] },
    },
    {
      name: 'middleware-sees-only-the-error-types-of-api',
      comment: 'Middlewares throw from the one error hierarchy; the rest of api/ is above them.',
      severity: 'error',
      from: { path: '^middleware/' },
      to: { path: '^api/', pathNot: '^api/(errors|error-code)\\.ts$' },
    },
    {
      name: 'bearer-knows-no-koa',
      comment: 'Token validation is plain functions over strings; only middleware/authenticate.ts meets koa.',
      severity: 'error',
      from: { path: '^middleware/bearer/' },
      to: { path: ['node_modules/(koa|@koa/)', '^middleware/(?!bearer/)'] },
    },
    {
      name: 'token-layer-below-downstream-and-routes',
      severity: 'error',
      from: { path: '^api/token/' },
      to: { path: '^api/(routes|downstream)/' },
    },
    {
      name: 'downstream-below-routes',
      severity: 'error',
      from: { path: '^api/downstream/' },
      to: { path: ['^api/routes/', 'node_modules/(koa|@koa/)'] },
    },
    {
      name: 'config-knows-nothing-of-the-running-service',
      severity: 'error',
      from: { path: '^api/config/' },
      to: { path: ['^api/(routes|token|observability)/', '^api/app\\.ts$', '^middleware/', 'node_modules/(koa|@koa/|@azure/msal-node|ioredis)'] },
    },
    {
      name: 'only-the-assembly-imports-routes',
      severity: 'error',
      from: { path: '^(api|middleware|cache)/', pathNot: '^api/(app|routes/)' },
      to: { path: '^api/routes/' },
    },
    {
      name: 'no-orphans',
      severity: 'error',
      from: { orphan: true, pathNot: ['\\.d\\.ts$', '(^|/)\\.[^/]+\\.(c?js|json)$', '^(eslint\\.config\\.js|test/.*|bench/.*)$'] },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
