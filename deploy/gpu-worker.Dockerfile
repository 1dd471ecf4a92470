# The Python GPU worker (gpu-workers/, package atelier_gpu) for `--backend diffusers`. PyPI's torch
# wheels for Linux x86_64 bundle CUDA, so a plain Python base is enough; the NVIDIA container
# toolkit provides the driver at run time (compose: deploy.resources.reservations.devices).
#   docker build -f deploy/gpu-worker.Dockerfile -t atelier-gpu-worker .
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY gpu-workers/requirements.txt gpu-workers/requirements.txt
RUN pip install --no-cache-dir --disable-pip-version-check -r gpu-workers/requirements.txt
COPY contracts ./contracts
COPY gpu-workers ./gpu-workers
ENV PYTHONPATH=/app/gpu-workers PYTHONUNBUFFERED=1
# TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE come from the environment (the worker's defaults read them).
ENTRYPOINT ["python", "-m", "atelier_gpu.worker"]
