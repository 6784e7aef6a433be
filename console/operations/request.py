"""How anything (button, API, CLI, schedule, watchdog) asks for an operation."""

from django.db import IntegrityError, transaction
from django.utils import translation

from console.audit.record import record
from console.operations import progress
from console.operations.models import Operation
from console.operations.need import healthy
from console.sentences import Sentence, gettext_noop, render, said


class OperationRefused(Exception):
    """The operation cannot be queued; the message (an English Sentence, as the audit keeps it) says why."""

    def rendered(self) -> str:
        """The reason in the active language (a page's reader's)."""
        return render(said(self.args[0]))


# How an active operation's state reads inside a sentence.
ACTIVE_WORDS = {Operation.State.QUEUED: gettext_noop("queued"), Operation.State.RUNNING: gettext_noop("running")}


def _english(label) -> Sentence:
    """A model choice's label as a Sentence: English text, translated where it is shown."""
    with translation.override(None):
        return Sentence(str(label))


def request_operation(
    instance,
    kind: str,
    *,
    user=None,
    reason: str = "",
    trigger: str = Operation.Trigger.MANUAL,
    options: dict | None = None,
    rollout=None,
    request=None,
    only_if_needed: bool = False,
) -> tuple[Operation, bool]:
    """Queue an operation on the instance's host; returns (operation, created).

    A request for the kind already queued or running joins it (created=False);
    a request for another kind while one is active is refused; with `only_if_needed`, a restart or
    soft reset of an instance whose checklist finds nothing to cure is refused, saying so.
    """

    def audit(outcome: str) -> None:
        record(
            f"operation.{kind}",
            request=request,
            user=user,
            actor=trigger,
            target=f"instance {instance.name}",
            reason=reason,
            outcome=outcome,
            trigger=trigger,
        )

    if kind not in Operation.Kind.values:
        audit(f"refused: unknown operation {kind!r}")
        raise OperationRefused(Sentence(gettext_noop("Unknown operation %(kind)r."), kind=kind))
    if not instance.enabled:
        audit("refused: instance disabled")
        raise OperationRefused(
            Sentence(
                gettext_noop("%(instance)s is disabled; enable it before operating on it."), instance=instance.name
            )
        )
    if only_if_needed and kind in (Operation.Kind.RESTART, Operation.Kind.SOFT_RESET) and (why := healthy(instance)):
        audit(f"refused: {why} (only if needed)")
        raise OperationRefused(
            Sentence(
                gettext_noop("%(instance)s is %(why)s: nothing for a restart to cure (only if needed)."),
                instance=instance.name,
                why=why,
            )
        )
    try:
        with transaction.atomic():
            operation = Operation.objects.create(
                instance=instance,
                kind=kind,
                trigger=trigger,
                requested_by=user if user is not None and user.is_authenticated else None,
                reason=reason[:500],
                options=options or {},
                rollout=rollout,
            )
    except IntegrityError:
        active = Operation.objects.filter(instance=instance, state__in=Operation.ACTIVE_STATES).first()
        if active is None:  # it finished between our insert and this read
            return request_operation(
                instance,
                kind,
                user=user,
                reason=reason,
                trigger=trigger,
                options=options,
                rollout=rollout,
                request=request,
                only_if_needed=only_if_needed,
            )
        if active.kind == kind:
            audit(f"joined #{active.pk} already {active.state}")
            return active, False
        message = Sentence(
            gettext_noop("%(kind)s #%(id)s is %(state)s for %(instance)s; wait for it to finish."),
            kind=_english(Operation.Kind(active.kind).label),
            id=active.pk,
            state=Sentence(ACTIVE_WORDS[active.state]),
            instance=instance.name,
        )
        audit(f"refused: {message}")
        raise OperationRefused(message) from None
    audit(f"queued as #{operation.pk}")
    transaction.on_commit(lambda: enqueue(operation))
    progress.announce(operation)
    return operation, True


def enqueue(operation: Operation) -> None:
    """Send the operation to its host's worker."""
    from console.operations.tasks import run_operation  # tasks imports this module

    run_operation.apply_async(args=[operation.pk], queue=operation.instance.host.queue)
