# Stand-in for python:3.11-slim-bookworm (the compose test only; users pull the real image): Debian
# bookworm minbase with Debian's Python 3.11 and pip (scripts/standin-python-rootfs.sh), imported as
# atelier-standin/python-rootfs by test/helpers/standinImages.ts. The real image's Python is in
# /usr/local, answers to `python` and `pip`, and is not marked externally managed; Debian's is made
# to behave the same for deploy/gpu-worker.Dockerfile's `pip install` as root.
ARG ROOTFS
FROM ${ROOTFS}
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
  && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip
ENV LANG=C.UTF-8
CMD ["python3"]
