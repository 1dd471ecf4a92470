# Stand-in for temporalio/admin-tools:<version> (the compose test only): the module's
# docker/targets/admin-tools.Dockerfile on Debian bookworm, with temporal-sql-tool built from the
# module, the project's pinned Temporal CLI and the module's schema folder.
ARG ROOTFS
FROM ${ROOTFS}
RUN groupadd -g 1000 temporal && useradd -u 1000 -g temporal -M temporal
COPY temporal temporal-sql-tool /usr/local/bin/
COPY schema /etc/temporal/schema
USER temporal
CMD ["sh", "-c", "trap exit INT HUP TERM; sleep infinity & wait"]
