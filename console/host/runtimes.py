"""Which runtime manages an instance."""

from console.host.docker import DockerRuntime
from console.host.process import ProcessRuntime
from console.host.runtime import Runtime


def runtime_for(instance) -> Runtime:
    """The runtime that manages this instance: its host's Docker Engine, or local processes."""
    if instance.runtime == "docker":
        return DockerRuntime.for_host(instance.host)
    return ProcessRuntime()
