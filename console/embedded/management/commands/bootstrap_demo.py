"""Set up the embedded default: roles, a demo operator, the local host and a demo instance."""

import os
import secrets
import subprocess
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from console.instances.models import Host, Instance
from console.instances.roles import ADMIN, OPERATOR, ensure_roles
from console.operations.models import Operation
from console.operations.request import request_operation


class Command(BaseCommand):
    help = "Create roles, a demo operator and a demo instance running the smoke model (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("CONSOLE_DEMO_PORT", "8100")))
        parser.add_argument("--no-start", action="store_true", help="Register the demo instance without starting it.")

    def handle(self, *args, port: int, no_start: bool, **options):
        ensure_roles()
        self._operator()
        host, _ = Host.objects.get_or_create(name=settings.CONSOLE_HOST_NAME, defaults={"notes": "This machine."})
        model_dir = settings.VAR_DIR / "models" / "smoke"
        if not (model_dir / "config.json").exists():
            self.stdout.write(f"writing the smoke model to {model_dir} ...")
            subprocess.run(
                [sys.executable, "-m", "inference.smoke_model", str(model_dir)], check=True, cwd=settings.BASE_DIR
            )
        instance, created = Instance.objects.get_or_create(
            name="demo",
            defaults={
                "display_name": "Demo (smoke model, CPU)",
                "host": host,
                "runtime": Instance.Runtime.PROCESS,
                # Under the supervisor: a restart is a handover, a new model process taking over from
                # the old one with nobody refused (restart in place, keeping the imports, where it cannot).
                "command": [sys.executable, "-m", "inference.supervisor"],
                "restart_in_place": True,
                "handover": True,
                "working_dir": str(settings.BASE_DIR),
                "env": {
                    "MODEL_PATH": str(model_dir),
                    "HOST": "127.0.0.1",
                    "PORT": str(port),
                    "ADMIN_TOKEN": secrets.token_urlsafe(24),
                    # A model process kept loaded beside the serving one takes the next handover at once.
                    "HANDOVER_STANDBY": "1",
                },
                "base_url": f"http://127.0.0.1:{port}",
                "ready_timeout": 120,
                "drain_timeout": 10,
                "stop_timeout": 15,
            },
        )
        if created:
            instance.admin_token = instance.env["ADMIN_TOKEN"]
            instance.save(update_fields=["admin_token"])
            self.stdout.write(f"registered demo instance on {instance.base_url}")
        if not no_start:
            operation, _ = request_operation(
                instance,
                Operation.Kind.START,
                reason="make run: start the demo instance",
                trigger=Operation.Trigger.API,
            )
            self.stdout.write(f"queued {operation}")

    def _operator(self) -> None:
        User = get_user_model()
        username = os.environ.get("CONSOLE_DEMO_USER", "operator")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"demo operator {username!r} exists (password unchanged)")
            return
        password = os.environ.get("CONSOLE_DEMO_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_user(username=username, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=ADMIN), Group.objects.get(name=OPERATOR))
        if os.environ.get("CONSOLE_DEMO_PASSWORD"):
            self.stdout.write(f"created demo operator {username!r} with the password from CONSOLE_DEMO_PASSWORD")
        else:
            self.stdout.write(self.style.WARNING(f"created demo operator — username: {username}  password: {password}"))
            self.stdout.write("(shown once; change it in the admin)")
