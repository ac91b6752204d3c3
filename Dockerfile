# syntax=docker/dockerfile:1
# The service as a container: `docker build -t obo-middle-tier .`
# Stage `build` compiles the TypeScript with every dependency; the runtime stage holds only the
# compiled code and the production dependencies, and runs as the unprivileged `node` user.
# CI cannot run Docker: .ci/docker-build-check runs these instructions without it.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY api ./api
COPY middleware ./middleware
COPY cache ./cache
COPY openapi ./openapi
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
# V8's heap capped at the caches' budgets plus a fixed base: CACHE_L1_MAX_BYTES (64 MiB) +
# TOKEN_VALIDATION_CACHE_MAX_BYTES (48 MiB) + 128 MiB. Left to size itself, V8 collects late and
# lets RSS run far past the live data. Raise it with the budgets (npm run bench checks the RSS).
ENV NODE_OPTIONS=--max-old-space-size=240
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: nothing the service needs runs one, and a package's telemetry hook should not.
# The npm cache is a build cache mount, so it never lands in the image.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --no-audit --no-fund --ignore-scripts
COPY --from=build /app/dist ./dist
USER node
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Node runs as PID 1 and handles SIGTERM itself (graceful shutdown within SHUTDOWN_TIMEOUT_MS).
CMD ["node", "dist/api/main.js"]
