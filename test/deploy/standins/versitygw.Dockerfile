# Stand-in for versity/versitygw:<version> (the compose test only): the versitygw binary the
# storage tests build from its module, as the entrypoint, like the real image.
ARG ROOTFS
FROM ${ROOTFS}
COPY versitygw /app/versitygw
WORKDIR /app
ENTRYPOINT ["/app/versitygw"]
