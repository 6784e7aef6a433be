"""What the console knows of each engine (an instance's model server kind) from the instance's own
settings alone: how its command is launched, and what in its set-up will hurt clients at a restart.
The clients that speak to each engine's server are the host's (console/host/engines.py)."""

SHUTDOWN_FLAG = "--shutdown-timeout"
# vLLM's /load then counts the requests its HTTP server holds, those its engine has not taken too: an
# engine hung while idle leaves its own gauges at 0 while every new request waits (console/host/vllm.py).
LOAD_FLAG = "--enable-server-load-tracking"


def shutdown_timeout_of(command: list[str]) -> int | None:
    """The --shutdown-timeout a vLLM command line sets, or None."""
    for index, arg in enumerate(command):
        if arg == SHUTDOWN_FLAG and index + 1 < len(command):
            value = command[index + 1]
        elif arg.startswith(SHUTDOWN_FLAG + "="):
            value = arg.split("=", 1)[1]
        else:
            continue
        try:
            return int(value)
        except ValueError:
            return None
    return None


def with_shutdown_timeout(command: list[str], seconds: int) -> list[str]:
    """The command with --shutdown-timeout set, so that SIGTERM lets in-flight requests finish (vLLM's
    default, 0, aborts them). A value already there is the operator's choice and kept."""
    if shutdown_timeout_of(command) is not None:
        return list(command)
    return [*command, SHUTDOWN_FLAG, str(seconds)]


def with_load_tracking(command: list[str]) -> list[str]:
    """The command with --enable-server-load-tracking, unless it says either way itself."""
    said = ("--no-" + LOAD_FLAG[2:], LOAD_FLAG)
    if any(arg in said or arg.startswith(tuple(flag + "=" for flag in said)) for arg in command):
        return list(command)
    return [*command, LOAD_FLAG]


def launch_command(instance, command: list[str]) -> list[str]:
    """The command line the console starts the instance with: a vLLM command always carries
    --shutdown-timeout (the instance's drain timeout unless it sets its own), so that SIGTERM lets
    in-flight requests finish instead of aborting them, and load tracking, so that requests its
    engine never took are seen."""
    if instance.engine == "vllm" and command:
        return with_load_tracking(with_shutdown_timeout(command, instance.drain_timeout))
    return list(command)


def launch_warnings(instance) -> list[str]:
    """What in a vLLM instance's set-up makes a restart hurt its clients, for the admin and the page."""
    if instance.engine != "vllm":
        return []
    if instance.runtime == "process":
        command = launch_command(instance, instance.command or [])
    else:
        command = launch_command(instance, (instance.run_spec or {}).get("command") or [])
    seconds = shutdown_timeout_of(command)
    if seconds is None:
        return [
            "vLLM without --shutdown-timeout aborts its in-flight requests on SIGTERM, and the console "
            "cannot add it: the container is not launched by the console with a command. Set it in the "
            "container's own command, or give the instance a run spec with its command."
        ]
    if seconds >= instance.stop_timeout:
        return [
            f"--shutdown-timeout is {seconds} s but the stop timeout is {instance.stop_timeout} s: requests still "
            "running when the stop timeout ends are killed with the server. Make the stop timeout longer."
        ]
    return []
