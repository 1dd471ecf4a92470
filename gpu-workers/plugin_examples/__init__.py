"""Example plugin adapters (gpu-workers/README.md, "Plugin adapters"). Not imported by the worker itself."""
