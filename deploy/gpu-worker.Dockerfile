# The Python GPU worker (gpu-workers/, package atelier_gpu) for `--backend diffusers`. PyPI's torch
# wheels for Linux x86_64 bundle CUDA, so a plain Python base is enough; the NVIDIA container
# toolkit provides the driver at run time (compose: deploy.resources.reservations.devices).
#   docker build -f deploy/gpu-worker.Dockerfile -t atelier-gpu-worker .
#   docker build --build-arg WHEELS=http://mirror/wheels/ ...   # no PyPI: only that wheelhouse
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY gpu-workers/requirements.txt gpu-workers/requirements.txt
# WHEELS: a pip --find-links URL holding every wheel the pins resolve to (an offline mirror; the
# compose test serves scripts/gpu-wheelhouse.sh's folder). Given, pip reads nothing else, and trusts
# that host even over plain http, since the builder named it.
ARG WHEELS=
RUN host="${WHEELS#*://}"; host="${host%%/*}"; host="${host%%:*}"; \
    pip install --no-cache-dir --disable-pip-version-check \
      ${WHEELS:+--no-index --find-links "$WHEELS" --trusted-host "$host"} -r gpu-workers/requirements.txt
COPY contracts ./contracts
COPY gpu-workers ./gpu-workers
ENV PYTHONPATH=/app/gpu-workers PYTHONUNBUFFERED=1
# TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE come from the environment (the worker's defaults read them).
ENTRYPOINT ["python", "-m", "atelier_gpu.worker"]
