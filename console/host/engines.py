"""Which client speaks to an instance's model server.

An instance's engine is its server's kind: `glm` (ours, inference/) or `vllm`. Everything that talks
to a server gets its client here; docs/ENGINES.md says what each engine offers the console.
"""

import httpx

from console.host.server import ModelServer
from console.host.vllm import VllmServer

CLIENTS: dict[str, type[ModelServer]] = {"glm": ModelServer, "vllm": VllmServer}


def server_for(instance, http: httpx.Client | None = None) -> ModelServer:
    """The client of the instance's server, for its engine."""
    client = CLIENTS.get(instance.engine, ModelServer)(instance.base_url, instance.admin_token, http)
    if isinstance(client, VllmServer):
        client.sleep_wake = bool(instance.gpu_indices)
    return client
