"""How the GPU worker reaches Temporal: address and namespace from its flags, and TLS, client
certificates, the server CA, the server name and the API key from the same TEMPORAL_* environment
settings as the TypeScript side (lib/temporal/temporalConnection.ts), read by the SDK's own environment
configuration. The TOML profile file is not read, as on the TypeScript side. The API key goes to
the SDK only; nothing here logs it.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile


async def connect(address: str, namespace: str) -> Client:
    config = ClientConfigProfile.load(disable_file=True).to_client_connect_config()
    config["target_host"] = address
    config["namespace"] = namespace
    return await Client.connect(**config)
