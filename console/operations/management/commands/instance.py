"""python manage.py instance restart NAME [--wait] [--reason ...] (start, stop, soft-reset, status,
diagnose);
hold NAME --minutes 120 --reason "driver upgrade", and unhold NAME (with --host, NAME is a host: every
instance on it)."""

import threading
import time
from json import dumps

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from console.instances.models import Host, Instance
from console.operations import pipeline
from console.operations.holds import HoldRefused, end_holds, place_holds
from console.operations.models import Operation
from console.operations.request import OperationRefused, request_operation
from console.operations.summaries import instance_summaries
from console.telemetry.diagnose import diagnose

ACTIONS = {"restart": "restart", "start": "start", "stop": "stop", "soft-reset": "soft_reset"}


def _execute_here(operation_id: int) -> None:
    try:
        pipeline.execute(operation_id)
    except pipeline.Busy:
        pass  # the console's own worker is running it; we only follow


class Command(BaseCommand):
    help = "Operate an instance from the shell; prints each step as it happens. Exit code 1 if it failed."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=[*ACTIONS, "status", "diagnose", "hold", "unhold"])
        parser.add_argument("name")
        parser.add_argument("--wait", action="store_true", help="Wait for the end and print every step.")
        parser.add_argument("--reason", default="")
        parser.add_argument("--user", help="Username recorded as the requester.")
        parser.add_argument("--recreate", action="store_true", help="Docker: create the container afresh.")
        parser.add_argument("--timeout", type=float, default=900)
        parser.add_argument("--minutes", type=int, default=120, help="hold: how long (default 120).")
        parser.add_argument("--host", action="store_true", help="hold, unhold: NAME is a host; every instance on it.")
        parser.add_argument(
            "--only-if-needed",
            action="store_true",
            help="restart, soft-reset: refused when the checklist finds nothing a restart would cure.",
        )
        parser.add_argument("--json", action="store_true", help="diagnose: the checklist as JSON, as the API gives it.")

    def handle(self, *args, action, name, wait, reason, user, recreate, timeout, minutes, host, json, **options):
        only_if_needed = options["only_if_needed"]
        if host:
            if action not in ("hold", "unhold"):
                raise CommandError("--host goes with hold and unhold only.")
            self._hold_host(name, action, minutes, reason, self._requester(user))
            return
        instance = Instance.objects.select_related("host").filter(name=name).first()
        if instance is None:
            raise CommandError(f"No instance named {name!r}.")
        if action == "status":
            for key, value in instance_summaries([instance])[0].items():
                self.stdout.write(f"{key:>17}: {value}")
            return
        if action == "diagnose":
            found = diagnose(instance).summary()
            if json:
                self.stdout.write(dumps(found, ensure_ascii=False))
                return
            self.stdout.write(f"{found['verdict']}: {found['advice']} ({found['samples']} samples)")
            for row in found["findings"]:
                evidence = f" ({'; '.join(row['evidence'])})" if row["evidence"] else ""
                self.stdout.write(f"  {row['level']:>7}  {row['rule']}: {row['summary']}{evidence}")
            return
        requester = self._requester(user)
        if action in ("hold", "unhold"):
            self._hold([instance], action, minutes, reason, requester, not_held=f"{instance.name} is not on hold.")
            return
        try:
            operation, created = request_operation(
                instance,
                ACTIONS[action],
                user=requester,
                reason=reason or "from the command line",
                options={"recreate": True} if recreate else {},
                only_if_needed=only_if_needed,
            )
        except OperationRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{'queued' if created else 'joined'} {operation}")
        if settings.CONSOLE_MODE == "embedded":
            # No shared broker: this process is the worker for its own request.
            threading.Thread(target=_execute_here, args=[operation.pk], daemon=True).start()
            wait = True
        if not wait:
            return
        operation = self._follow(operation.pk, timeout)
        if operation.state != Operation.State.SUCCEEDED:
            if operation.log_tail:
                self.stderr.write("last log lines:\n" + operation.log_tail)
            raise CommandError(f"{operation} {operation.state}: {operation.error}")
        self.stdout.write(self.style.SUCCESS(f"{operation} succeeded in {operation.duration:.1f} s"))

    @staticmethod
    def _requester(username):
        if not username:
            return None
        requester = get_user_model().objects.filter(username=username).first()
        if requester is None:
            raise CommandError(f"No user named {username!r}.")
        return requester

    def _follow(self, pk: int, timeout: float) -> Operation:
        printed: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            operation = Operation.objects.get(pk=pk)
            for index, step in enumerate(operation.steps):
                line = f"  {step['name']:<10} {step['state']:<8} {step['detail']}"
                if printed.get(index) != line:
                    printed[index] = line
                    self.stdout.write(line)
            if operation.is_finished:
                return operation
            if time.monotonic() > deadline:
                raise CommandError(f"{operation} still {operation.state} after {timeout:.0f} s")
            time.sleep(0.3)

    def _hold_host(self, name, action, minutes, reason, requester) -> None:
        host = Host.objects.filter(name=name).first()
        if host is None:
            raise CommandError(f"No host named {name!r}.")
        instances = list(host.instances.order_by("name"))
        if not instances:
            raise CommandError(f"No instance is registered on {name}.")
        self._hold(instances, action, minutes, reason, requester, not_held=f"No instance on {name} is on hold.")

    def _hold(self, instances, action, minutes, reason, requester, *, not_held: str) -> None:
        who = {"user": requester, "actor": "command line"}
        if action == "unhold":
            ended = end_holds(instances, **who)
            if not ended:
                raise CommandError(not_held)
            for hold in ended:
                self.stdout.write(f"{hold.instance.name}: hold ended")
            return
        try:
            holds = place_holds(instances, minutes=minutes, reason=reason, **who)
        except HoldRefused as exc:
            raise CommandError(str(exc)) from exc
        for hold in holds:
            self.stdout.write(f"{hold.instance.name}: {hold.said()}")
