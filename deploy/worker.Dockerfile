# The Atelier API/orchestration worker (`atelier worker`): Node 20, the compiled CLI and the
# prebuilt workflow bundle. Keys and the Temporal address come from the environment at run time.
#   docker build -f deploy/worker.Dockerfile -t atelier-worker .
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The Temporal CLI (dev server) is not needed in a worker image: TEMPORAL_CLI_PATH makes the
# postinstall step skip its download; --ignore-scripts defers the build until the sources are in.
RUN TEMPORAL_CLI_PATH=/bin/true npm ci --ignore-scripts
COPY . .
# The Temporal core bridge ships prebuilt libraries for five platforms (~27 MB each): keep the
# Linux ones (x64 and arm64 builds of this image), drop macOS and Windows.
RUN node scripts/build.mjs && npm prune --omit=dev \
  && rm -rf node_modules/@temporalio/core-bridge/releases/*-apple-darwin node_modules/@temporalio/core-bridge/releases/*-windows-msvc

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY --from=build /app/scripts ./scripts
COPY --from=build /app/contracts ./contracts
USER node
ENTRYPOINT ["node", "bin/atelier.js"]
CMD ["worker"]
