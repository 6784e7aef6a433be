"""Register (or update) an instance and its host: for deployments configured as code."""

import json
import os
import shlex

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from console.instances.engines import launch_warnings
from console.instances.models import Host, Instance


class Command(BaseCommand):
    help = (
        "Create or update an instance by name (idempotent): a Docker container (--container) or a local "
        "process (--command), whose server meets the contract in docs/ENGINES.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--host", required=True, help="Host name; its worker serves host.<name>.")
        parser.add_argument("--url", required=True, help="Where the server answers, e.g. http://glm-a-1:8080.")
        parser.add_argument("--group", default="")
        parser.add_argument("--display-name", default="")
        parser.add_argument("--gpus", default="", help="GPU indices, e.g. 0 or 0,1.")
        parser.add_argument("--admin-token-env", help="Environment variable holding the server's admin token.")
        parser.add_argument(
            "--engine",
            choices=Instance.Engine.values,
            default=Instance.Engine.GLM,
            help="The model server: glm (ours, inference/) or vllm (docs/ENGINES.md).",
        )
        parser.add_argument("--drain-timeout", type=int, help="Seconds in-flight requests get to finish (default 30).")
        parser.add_argument(
            "--stop-timeout", type=int, help="Seconds between SIGTERM and SIGKILL (default 30; vLLM: drain + 15)."
        )
        parser.add_argument(
            "--restart-in-place",
            action="store_true",
            help="Restarts replace the model process only (the server runs python -m inference.supervisor).",
        )
        parser.add_argument(
            "--handover",
            action="store_true",
            help="Restarts are handovers: a new model process serves before the old one drains (inference.supervisor).",
        )
        docker = parser.add_argument_group("a Docker container")
        docker.add_argument("--container", help="Container name.")
        docker.add_argument("--docker-url", help="The host worker's Docker endpoint, e.g. tcp://socket-proxy:2375.")
        docker.add_argument("--image", default="", help="Image to recreate the container from.")
        process = parser.add_argument_group("a local process (run by the host's worker)")
        process.add_argument(
            "--command", help='The program and its arguments: a JSON list, or a shell-quoted line ("python -m app").'
        )
        process.add_argument("--working-dir", default="", help="Directory the process starts in.")
        process.add_argument(
            "--env", action="append", default=[], metavar="NAME=VALUE", help="An environment variable (repeatable)."
        )

    def handle(self, *args, **o):
        if bool(o["container"]) == bool(o["command"]):
            raise CommandError("Give either --container (a Docker instance) or --command (a process instance).")
        host, _ = Host.objects.get_or_create(name=o["host"])
        if o["docker_url"] and host.docker_url != o["docker_url"]:
            host.docker_url = o["docker_url"]
            host.save(update_fields=["docker_url"])
        try:
            gpus = [int(i) for i in o["gpus"].split(",") if i.strip()]
        except ValueError:
            raise CommandError(f"--gpus must be integers separated by commas, not {o['gpus']!r}.") from None
        token = ""
        if o["admin_token_env"]:
            token = os.environ.get(o["admin_token_env"], "")
            if not token:
                raise CommandError(f"${o['admin_token_env']} is empty.")
        instance = Instance.objects.filter(name=o["name"]).first() or Instance(name=o["name"])
        instance.host = host
        if o["container"]:
            instance.runtime = Instance.Runtime.DOCKER
            instance.container_name = o["container"]
            instance.image = o["image"]
        else:
            instance.runtime = Instance.Runtime.PROCESS
            instance.command = _command(o["command"])
            instance.working_dir = o["working_dir"]
            instance.env = _env(o["env"])
        instance.base_url = o["url"]
        instance.group = o["group"]
        instance.display_name = o["display_name"]
        instance.gpu_indices = gpus
        instance.admin_token = token
        instance.restart_in_place = o["restart_in_place"]
        instance.handover = o["handover"]
        instance.engine = o["engine"]
        if o["drain_timeout"] is not None:
            instance.drain_timeout = o["drain_timeout"]
        if o["stop_timeout"] is not None:
            instance.stop_timeout = o["stop_timeout"]
        elif instance.engine == Instance.Engine.VLLM:
            # vLLM gets --shutdown-timeout = the drain timeout: the stop timeout outlasts it, with time
            # for the engine's teardown
            instance.stop_timeout = max(instance.stop_timeout, instance.drain_timeout + 15)
        try:
            instance.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        created = instance.pk is None
        instance.save()
        self.stdout.write(f"{'registered' if created else 'updated'} {instance.name} on {host.name}")
        for warning in launch_warnings(instance):
            self.stderr.write(f"warning: {warning}")


def _command(text: str) -> list:
    if text.lstrip().startswith("["):
        try:
            command = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"--command is not a JSON list: {exc}") from None
    else:
        try:
            command = shlex.split(text)
        except ValueError as exc:
            raise CommandError(f"--command cannot be split into arguments: {exc}") from None
    return command  # full_clean checks it is a list of non-empty strings


def _env(pairs: list[str]) -> dict:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--env takes NAME=VALUE, not {pair!r}.")
        env[name] = value
    return env
