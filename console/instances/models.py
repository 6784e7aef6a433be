"""What runs where: GPU hosts and the inference instances on them."""

import posixpath
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "Use 1-63 lower-case letters, digits and hyphens, starting with a letter or digit.",
)


def server_url_validator(value: str) -> None:
    """An http(s) URL whose host may also be a single name: a compose or Kubernetes service
    (http://glm-a-1:8080), which Django's URL validator refuses for lack of a top-level domain."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme in ("http", "https")
        and SERVICE_NAME.fullmatch(parts.hostname or "")
        and (port is None or 0 < port < 65536)
        and not parts.username
        and not parts.password
    ):
        return
    URLValidator(schemes=["http", "https"], message="Enter an http(s) URL, e.g. http://glm-a-1:8080.")(value)


SERVICE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Docker's own rule for container names.
container_name_validator = RegexValidator(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$", "Not a valid container name.")


HOST_QUEUE_PREFIX = "host."


def host_queue(host_name: str) -> str:
    """The queue a host's worker listens on: its operations, samples and watchdog run there."""
    return HOST_QUEUE_PREFIX + host_name


def host_of_queue(queue: str) -> str | None:
    """The host whose queue this is, or None for another queue."""
    return queue.removeprefix(HOST_QUEUE_PREFIX) if queue.startswith(HOST_QUEUE_PREFIX) else None


class Host(models.Model):
    """A machine with GPUs; its own Celery worker owns its Docker socket and NVML."""

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    docker_url = models.CharField(
        "Docker endpoint",
        max_length=255,
        default="unix:///var/run/docker.sock",
        help_text="Used by this host's worker only; the console never reaches it directly.",
    )
    notes = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Written by the host's worker at each sampling round: its sign of life and what NVML saw.
    seen_at = models.DateTimeField(
        "last report", null=True, blank=True, editable=False, help_text="The end of its worker's last sampling round."
    )
    gpus = models.JSONField(
        default=list, blank=True, editable=False, help_text="Its worker's last NVML snapshot, with owners."
    )
    nvml = models.CharField("NVML", max_length=300, blank=True, editable=False, help_text="Why NVML gave nothing.")
    reported_by = models.CharField(
        max_length=200, blank=True, editable=False, help_text="The worker that reported: its host name, machine, pid."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return host_queue(self.name)


def _positive_seconds(default: int, help_text: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        default=default, validators=[MinValueValidator(1), MaxValueValidator(3600)], help_text=help_text
    )


class Instance(models.Model):
    """One inference server: a container or a supervised process on a host."""

    class Runtime(models.TextChoices):
        DOCKER = "docker", _("Docker container")
        PROCESS = "process", _("Local process")

    class Engine(models.TextChoices):
        GLM = "glm", "GLM server (inference/)"
        VLLM = "vllm", "vLLM"

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    display_name = models.CharField(max_length=120, blank=True)
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="instances")
    runtime = models.CharField(max_length=16, choices=Runtime.choices, default=Runtime.PROCESS)
    engine = models.CharField(
        max_length=16,
        choices=Engine.choices,
        default=Engine.GLM,
        help_text="The model server's kind: how the console reads its health and figures, drains and resets it.",
    )
    group = models.CharField(
        max_length=63, blank=True, validators=[slug_validator], help_text="Replicas share a group."
    )

    # docker runtime
    container_name = models.CharField(max_length=128, blank=True, validators=[container_name_validator])
    image = models.CharField(max_length=255, blank=True)
    run_spec = models.JSONField(
        default=dict,
        blank=True,
        help_text="Extra container settings: command, environment, volumes, network_mode, shm_size.",
    )

    # process runtime
    command = models.JSONField(
        default=list, blank=True, help_text='Program and arguments as a list, e.g. ["python", "-m", "app"].'
    )
    working_dir = models.CharField(max_length=500, blank=True)
    env = models.JSONField(default=dict, blank=True, help_text="Environment variables for the process.")

    base_url = models.CharField(
        "server URL",
        max_length=200,
        validators=[server_url_validator],
        help_text="Where the inference server answers, e.g. http://127.0.0.1:8080 or http://glm-a-1:8080",
    )
    admin_token = models.CharField(
        max_length=200, blank=True, help_text="Bearer token for the server's /admin endpoints (drain, soft reset)."
    )
    gpu_indices = models.JSONField(default=list, blank=True, help_text="GPU indices, e.g. [0] or [0, 1].")

    restart_in_place = models.BooleanField(
        "restart in place",
        default=False,
        help_text=(
            "Restarts replace the model process only, from its supervisor (python -m inference.supervisor), "
            "which keeps torch and transformers imported: seconds instead of a whole start. A server that "
            "cannot is restarted whole. A recreate is always whole."
        ),
    )

    handover = models.BooleanField(
        "restart by handover",
        default=False,
        help_text=(
            "Restarts start a new model process beside the old one, from its supervisor "
            "(python -m inference.supervisor); the old one stops taking requests only once the new one "
            "serves, then finishes its own: nobody is refused. Needs room for a second model on the "
            "device (else the supervisor restarts in place, drained). Wins over restart in place; "
            "a recreate is always whole."
        ),
    )

    drain_timeout = _positive_seconds(30, "Seconds to let in-flight requests finish before stopping.")
    stop_timeout = _positive_seconds(30, "Seconds between SIGTERM and SIGKILL.")
    ready_timeout = _positive_seconds(300, "Seconds to wait for /health/ready after a start.")

    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("operate_instance", "Can restart, start, stop and soft-reset instances")]

    def __str__(self) -> str:
        return self.display_name or self.name

    def get_absolute_url(self) -> str:
        return reverse("instances:detail", args=[self.name])

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def clean(self) -> None:
        errors = {}
        if self.runtime == self.Runtime.DOCKER:
            if not self.container_name:
                errors["container_name"] = "A Docker instance needs a container name."
            if isinstance(self.run_spec, dict):
                errors.update(_check_run_spec(self.run_spec))
        if not isinstance(self.run_spec, dict):  # a process instance's too: its column holds an object
            errors["run_spec"] = "The run spec must be a JSON object."
        if self.runtime == self.Runtime.PROCESS:
            if (
                not self.command
                or not isinstance(self.command, list)
                or not all(isinstance(arg, str) and arg for arg in self.command)
            ):
                errors["command"] = "A process instance needs its command as a list of non-empty strings."
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            errors["env"] = "The environment must be a JSON object of strings."
        if not isinstance(self.gpu_indices, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 64 for i in self.gpu_indices
        ):
            errors["gpu_indices"] = "GPU indices must be a list of integers between 0 and 63."
        if self.engine == self.Engine.VLLM and self.restart_in_place:
            errors["restart_in_place"] = "vLLM has no restart in place: its restarts are whole."
        if self.engine == self.Engine.VLLM and self.handover:
            errors["handover"] = "vLLM has no handover: its restarts are whole."
        if errors:
            raise ValidationError(errors)


RUN_SPEC_KEYS = {"command", "environment", "volumes", "network_mode", "shm_size", "entrypoint", "user"}
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
ROOT_USERS = {"root", "0"}


def _check_run_spec(spec: dict) -> dict:
    problem = run_spec_problem(spec)
    return {"run_spec": problem} if problem else {}


def run_spec_problem(spec: dict) -> str | None:
    """What in a container spec the deployment does not allow, in a sentence; None if nothing.

    Bind sources come only from CONSOLE_BIND_SOURCES (mounted read-only, never the Docker socket),
    network modes other than a bridge only from CONSOLE_NETWORK_MODES, and never root: recreating
    a container from its spec must not be a way onto the host. The Docker socket proxy holds the
    same line for whatever reaches it.
    """
    unknown = sorted(set(spec) - RUN_SPEC_KEYS)
    if unknown:
        return f"Unknown run spec keys: {', '.join(unknown)}. Allowed: {', '.join(sorted(RUN_SPEC_KEYS))}."
    command = spec.get("command")
    if command is not None and not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        return "run_spec.command must be a list of strings."
    environment = spec.get("environment")
    if environment is not None and not (
        isinstance(environment, dict) and all(isinstance(v, str) for v in environment.values())
    ):
        return "run_spec.environment must be an object of strings."
    volumes = spec.get("volumes")
    if volumes is not None:
        if not (isinstance(volumes, list) and all(isinstance(v, str) for v in volumes)):
            return 'run_spec.volumes must be a list like ["/models:/models:ro"].'
        for volume in volumes:
            problem = _volume_problem(volume)
            if problem:
                return problem
    user = spec.get("user")
    if user is not None and (not isinstance(user, str) or user.split(":")[0].strip() in ROOT_USERS):
        return 'run_spec.user must name a user other than root (e.g. "1000").'
    network = spec.get("network_mode", "bridge")
    if not isinstance(network, str):
        return "run_spec.network_mode must be a string."
    kind = network.split(":")[0]
    if kind in ("host", "container", "none") and kind not in settings.CONSOLE_NETWORK_MODES:
        allowed = ", ".join(["bridge", *settings.CONSOLE_NETWORK_MODES])
        return (
            f"Network mode {network!r} is not allowed on this deployment (allowed: {allowed}; CONSOLE_NETWORK_MODES)."
        )
    return None


def _volume_problem(volume: str) -> str | None:
    parts = volume.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        return f"Volume {volume!r} must be source:target[:ro]."
    source = parts[0]
    if not source.startswith("/"):
        return None  # a named volume: Docker's storage, not the host's files
    path = PurePosixPath(posixpath.normpath(source))
    if ".." in PurePosixPath(source).parts:
        return f"Volume source {source!r} may not climb out with '..'."
    if any(path == PurePosixPath(s) or PurePosixPath(s).is_relative_to(path) for s in DOCKER_SOCKETS):
        return f"Volume source {source!r} would expose the Docker socket: never allowed."
    if not any(path.is_relative_to(PurePosixPath(allowed)) for allowed in settings.CONSOLE_BIND_SOURCES):
        allowed = ", ".join(settings.CONSOLE_BIND_SOURCES) or "none"
        return f"Volume source {source!r} is outside the allowed bind sources ({allowed}; CONSOLE_BIND_SOURCES)."
    if len(parts) == 2 or "ro" not in parts[2].split(","):
        return f"Volume {volume!r} must be mounted read-only (:ro)."
    return None


class Hold(models.Model):
    """An instance on hold while someone works on it: until `until`, automation leaves it alone (the
    watchdog does not act, rollouts and schedules skip it) and its alerts are silenced. Operators
    still operate it. One row per instance, kept once it has passed: the watchdog reads its end."""

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="hold")
    until = models.DateTimeField()
    reason = models.CharField(max_length=300)
    placed_by = models.CharField(max_length=150, help_text="Who placed it (a name kept if the account goes).")
    placed = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.instance.name} on hold until {self.until:%Y-%m-%d %H:%M} UTC"

    def summary(self) -> dict:
        """What the API and the pages get."""
        return {
            "until": self.until.isoformat(),
            "until_ts": self.until.timestamp(),
            "by": self.placed_by,
            "reason": self.reason,
            "placed": self.placed.isoformat(),
        }

    def said(self) -> str:
        """One line for a skipped rollout entry or a silenced alert."""
        return f"on hold until {self.until:%Y-%m-%d %H:%M} UTC by {self.placed_by}: {self.reason}"
