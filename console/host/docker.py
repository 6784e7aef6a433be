"""The Docker runtime: containers on a host's Docker Engine, through the Docker SDK.

Containers the console creates carry MANAGED_LABEL; the console only touches
a container that carries it or that an instance names explicitly.
"""

import re
import time
from datetime import datetime

import docker
import requests
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from console.host.runtime import RuntimeFailure, RuntimeStatus, StopResult
from console.instances.engines import launch_command
from console.instances.models import run_spec_problem
from console.sentences import Sentence, gettext_noop

MANAGED_LABEL = "io.instance-console.managed"
INSTANCE_LABEL = "io.instance-console.instance"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"


class DockerRuntime:
    def __init__(self, client: docker.DockerClient):
        self.client = client

    @classmethod
    def for_host(cls, host) -> "DockerRuntime":
        try:
            return cls(docker.DockerClient(base_url=host.docker_url, timeout=30))
        except DockerException as exc:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("Docker Engine at %(url)s is unreachable: %(why)s"), url=host.docker_url, why=str(exc)
                )
            ) from exc

    def _container(self, instance):
        """The container named exactly as the instance says (Docker would also match an ID prefix)."""
        try:
            container = self.client.containers.get(instance.container_name)
        except NotFound:
            return None
        except (APIError, DockerException, requests.RequestException) as exc:
            raise RuntimeFailure(Sentence(gettext_noop("Docker Engine error: %(why)s"), why=_explain(exc))) from exc
        return container if container.name == instance.container_name else None

    def status(self, instance, groups=None) -> RuntimeStatus:
        """The container's state; `groups` (a process runtime's round table) is not needed here."""
        container = self._container(instance)
        if container is None:
            missing = Sentence(gettext_noop("container %(name)s does not exist"), name=instance.container_name)
            return RuntimeStatus(running=False, detail=missing)
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return RuntimeStatus(
                running=True,
                pids=self.pids(container),
                detail=Sentence(gettext_noop("container %(state)s"), state=state.get("Status")),
                log_rotation=log_rotation(container),
            )
        return RuntimeStatus(
            running=False,
            detail=Sentence(gettext_noop("container %(state)s"), state=state.get("Status", "unknown")),
            exit_code=state.get("ExitCode"),
            log_rotation=log_rotation(container),
        )

    def signal_supervisor(self, instance, supervisor_pid: int, signum: int) -> bool:
        """Signal the container's first process if it is the supervisor the server named (pid 1 in
        the container's namespace); False when it is not."""
        container = self._container(instance)
        if container is None or supervisor_pid != 1:
            return False
        try:
            container.kill(signal=int(signum))
        except (APIError, DockerException, requests.RequestException) as exc:
            raise RuntimeFailure(Sentence(gettext_noop("Docker Engine error: %(why)s"), why=_explain(exc))) from exc
        return True

    def pids(self, container) -> list[int]:
        """Host PIDs of the container's processes (to map GPU processes to the instance)."""
        try:
            top = container.top(ps_args="-o pid")
        except (APIError, DockerException):
            return []
        return sorted(int(row[0]) for row in top.get("Processes") or [] if row and row[0].isdigit())

    def start(self, instance, *, recreate: bool = False) -> str:
        container = self._container(instance)
        if container is not None and recreate:
            self._remove(container)
            container = None
        try:
            if container is None:
                container = self._create(instance)
                created = gettext_noop("container %(name)s created and started (%(id)s)")
            else:
                created = gettext_noop("container %(name)s started (%(id)s)")
            container.start()
        except ImageNotFound as exc:
            raise RuntimeFailure(
                Sentence(gettext_noop("Image %(image)r is not on this host."), image=instance.image)
            ) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("Docker could not start %(name)s: %(why)s"),
                    name=instance.container_name,
                    why=_explain(exc),
                )
            ) from exc
        return Sentence(created, name=instance.container_name, id=container.short_id)

    def recreate_problem(self, instance) -> str | None:
        """Why recreating this instance's container would lose it, or None.

        Recreating means creating again from the stored spec. A container the console did not
        create (registered by name, e.g. a compose service) and no stored spec would come back as
        a bare container of its image, without its environment, mounts or ports.
        """
        container = self._container(instance)
        if container is None:
            return None
        project = container.labels.get(COMPOSE_PROJECT_LABEL)
        if project:
            return (
                f"container {instance.container_name} is a service of the compose project {project!r}, which "
                "owns its setup (models mount, GPUs, networks); restart it, or recreate it with "
                "docker-compose up -d --force-recreate"
            )
        if instance.run_spec or container.labels.get(MANAGED_LABEL) == "true":
            return None
        return (
            f"container {instance.container_name} was not created by the console and {instance.name} has no "
            "stored run spec, so it cannot be recreated faithfully; restart it, or recreate it with the tool "
            "that created it (e.g. docker-compose up -d --force-recreate)"
        )

    def _create(self, instance):
        if not instance.image:
            raise RuntimeFailure(
                Sentence(gettext_noop("%(name)s has no image to create its container from."), name=instance.name)
            )
        problem = run_spec_problem(instance.run_spec or {})  # checked again: the row may have been edited
        if problem:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("the container spec of %(name)s is not allowed: %(why)s"),
                    name=instance.name,
                    why=problem,
                )
            )
        spec = dict(instance.run_spec or {})
        kwargs = {
            "image": instance.image,
            "name": instance.container_name,
            "labels": {MANAGED_LABEL: "true", INSTANCE_LABEL: instance.name},
            "environment": {**(spec.pop("environment", None) or {}), **(instance.env or {})},
            "network_mode": spec.pop("network_mode", "bridge"),
            "stop_signal": "SIGTERM",
            "detach": True,
        }
        if spec.get("command"):
            spec["command"] = launch_command(instance, spec["command"])
        volumes = spec.pop("volumes", None)
        if volumes:
            kwargs["volumes"] = volumes
        if settings.INSTANCE_LOG_MAX_BYTES > 0:
            # Rotated like a local process's log (Docker's json-file keeps everything by default).
            kwargs["log_config"] = docker.types.LogConfig(
                type=docker.types.LogConfig.types.JSON,
                config={
                    "max-size": str(settings.INSTANCE_LOG_MAX_BYTES),
                    "max-file": str(max(1, settings.INSTANCE_LOG_BACKUPS) + 1),  # the current file counts
                    "compress": "true",  # the older files gzipped, as a local process's are
                },
            )
        if instance.gpu_indices:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(device_ids=[str(i) for i in instance.gpu_indices], capabilities=[["gpu"]])
            ]
        kwargs.update(spec)
        return self.client.containers.create(**kwargs)

    def _remove(self, container) -> None:
        try:
            # With its anonymous volumes (an image's VOLUME nothing was mounted on): a re-created
            # container gets fresh ones, so the old ones would only fill the disk. Named volumes stay.
            container.remove(force=True, v=True)
        except NotFound:
            pass
        except (APIError, DockerException, requests.RequestException) as exc:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("Docker could not remove %(name)s: %(why)s"), name=container.name, why=_explain(exc)
                )
            ) from exc

    def stop(self, instance, timeout: float) -> StopResult:
        container = self._container(instance)
        began = time.monotonic()
        if container is None or container.status != "running":
            return StopResult(forced=False, seconds=0.0, detail=Sentence(gettext_noop("was not running")))
        try:
            # Docker sends the stop signal, waits `timeout`, then SIGKILLs.
            container.stop(timeout=int(timeout))
            container.reload()
        except NotFound:
            gone = Sentence(gettext_noop("container disappeared"))
            return StopResult(forced=False, seconds=time.monotonic() - began, detail=gone)
        except (APIError, DockerException, requests.RequestException) as exc:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("Docker could not stop %(name)s: %(why)s"),
                    name=instance.container_name,
                    why=_explain(exc),
                )
            ) from exc
        seconds = time.monotonic() - began
        code = container.attrs.get("State", {}).get("ExitCode")
        forced = code == 137
        detail = (
            Sentence(gettext_noop("killed after %(seconds).0f s without exiting"), seconds=timeout)
            if forced
            else Sentence(gettext_noop("exited %(seconds).1f s after SIGTERM"), seconds=seconds)
        )
        return StopResult(forced=forced, seconds=seconds, detail=detail)

    def log_tail(self, instance, lines: int = 50) -> list[str]:
        container = self._container(instance)
        if container is None:
            return []
        try:
            raw = container.logs(tail=lines, stdout=True, stderr=True)
        except (APIError, DockerException):
            return []
        return raw.decode("utf-8", errors="replace").splitlines()[-lines:]

    def log_cursor(self, instance) -> "ContainerCursor":
        return ContainerCursor(self, instance)

    def log_disk(self, instance) -> dict | None:
        return None  # the daemon's disk: not this worker's to see (its json-file logs are capped at creation)


def log_rotation(container) -> dict:
    """The container's logging driver and its limits, as Docker keeps them: a json-file log without
    max-size (Docker's default; a container created before the console set limits, or by another
    tool) grows until the daemon's disk is full, and only a new container takes new limits."""
    config = container.attrs.get("HostConfig", {}).get("LogConfig") or {}
    driver = str(config.get("Type") or "json-file")
    options = config.get("Config") or {}
    max_bytes, files = docker_size(options.get("max-size")), _whole(options.get("max-file"))
    if driver == "local":  # rotated by default: 20 MB, 5 files (Docker's local driver)
        max_bytes, files = max_bytes or 20 * 2**20, files or 5
    elif driver == "json-file":
        files = files or 1
    return {"driver": driver, "max_bytes": max_bytes, "files": files}


_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.I)


def docker_size(text) -> int | None:
    """Bytes of a size as Docker's log options take it ("20m", "1.5g", "4096"; binary units), or None."""
    match = _SIZE.match(str(text or "").strip())
    if not match:
        return None
    power = " kmgtp".index((match[2] or " ").lower())
    size = int(float(match[1]) * 1024**power)
    return size if size > 0 else None


def _whole(text) -> int | None:
    try:
        value = int(str(text))
    except ValueError:
        return None
    return value if value > 0 else None


class ContainerCursor:
    """New log lines of a container (stdout and stderr) since the last read."""

    def __init__(self, runtime: "DockerRuntime", instance, backlog_lines: int = 200):
        self.runtime = runtime
        self.instance = instance
        self.backlog_lines = backlog_lines
        self.last = ""  # Docker's fixed-width RFC 3339 timestamp of the last line seen

    def read(self) -> list[bytes]:
        try:
            container = self.runtime._container(self.instance)
            if container is None:
                return []
            if self.last:
                since = datetime.fromisoformat(self.last[:26] + "+00:00").timestamp()
                raw = container.logs(stdout=True, stderr=True, timestamps=True, since=since)
            else:
                raw = container.logs(stdout=True, stderr=True, timestamps=True, tail=self.backlog_lines)
        except (RuntimeFailure, APIError, DockerException, requests.RequestException):
            return []
        lines = []
        for line in raw.split(b"\n"):
            stamp, _, text = line.partition(b" ")
            stamp_text = stamp.decode("ascii", errors="replace")
            if not stamp or stamp_text <= self.last:
                continue  # `since` has whole-microsecond precision: lines at the boundary come again
            self.last = stamp_text
            lines.append(text)
        return lines


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    if isinstance(exc, requests.ConnectionError):
        return Sentence(gettext_noop("the Docker Engine went away or is not running (%(why)s)"), why=str(exc))
    if isinstance(exc, requests.Timeout):
        return Sentence(gettext_noop("the Docker Engine did not answer in time (%(why)s)"), why=str(exc))
    return str(exc)
