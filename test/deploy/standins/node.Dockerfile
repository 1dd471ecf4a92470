# Stand-in for node:20-bookworm-slim (the compose test only; users pull the real image): Debian
# bookworm minbase from the apt mirror with this machine's Node 20 and npm copied in and a `node`
# user (uid 1000), imported as atelier-standin/node-rootfs by test/deploy/engine.ts. No registry
# is reachable from the test's builds, so the project's npm cache (what `npm ci` on the host
# fetched, keyed by package-lock.json) comes along and npm runs offline from it.
ARG ROOTFS
FROM ${ROOTFS}
COPY _cacache /var/cache/atelier-npm/_cacache
ENV npm_config_cache=/var/cache/atelier-npm npm_config_offline=true npm_config_update_notifier=false
CMD ["node"]
