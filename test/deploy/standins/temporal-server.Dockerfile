# Stand-in for temporalio/server:<version> (the compose test only): the server's own
# docker/targets/server.Dockerfile (from the go.temporal.io/server module), on Debian bookworm
# instead of Alpine, with the temporal-server binary the cluster tests build from the module.
# The binary renders its embedded docker config template from the environment, as the real image.
ARG ROOTFS
FROM ${ROOTFS}
RUN groupadd -g 1000 temporal && useradd -u 1000 -g temporal -M temporal
COPY temporal-server /usr/local/bin/temporal-server
COPY entrypoint.sh /etc/temporal/entrypoint.sh
WORKDIR /etc/temporal
USER temporal
# The entrypoint is written for Alpine's sh (`set -o pipefail`), which Debian's dash lacks: bash runs it.
CMD ["/bin/bash", "/etc/temporal/entrypoint.sh"]
