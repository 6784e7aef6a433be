"""What a host's worker touches: runtimes, NVML, sockets, logs, and the model server client."""
