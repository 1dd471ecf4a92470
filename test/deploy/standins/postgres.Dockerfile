# Stand-in for postgres:<major> (the compose test only): Debian's PostgreSQL 15 on bookworm, with
# an entrypoint that does what the official image's does with POSTGRES_USER/POSTGRES_PASSWORD and
# PGDATA, so the compose file's service runs unchanged (with POSTGRES_VERSION=15).
ARG ROOTFS
FROM ${ROOTFS}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
