"""The watchdog's evaluation: its rules on an instance's latest samples, then act, alert or wait.

Like a Kubernetes liveness probe (failureThreshold) plus the soft-decay signs of
the runbook, with a start-up grace period, exponential backoff between actions
and a cap per hour, after which the instance "needs attention" and only alerts.
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from console.alerts.models import AlertDelivery
from console.alerts.notify import NEEDS_ATTENTION, WATCHDOG, notify
from console.instances.holds import active_hold, last_hold_end
from console.operations.effect import with_latency_effects
from console.operations.models import Operation
from console.operations.request import OperationRefused, request_operation
from console.telemetry.models import Sample
from console.telemetry.rules import Finding, baseline_p95
from console.watchdog.models import Watchdog

log = logging.getLogger(__name__)
LATENCY_RULES = ("p95_limit", "p95_factor")


def _sustained(samples: list[Sample], test, sustain: int, now) -> bool:
    """The condition has held in every sample for at least `sustain` seconds up to now.

    Counted from the first sample of the unbroken run that ends with the latest one, so it
    does not depend on how many samples a window of `sustain` seconds happens to hold.
    """
    run = 0
    for sample in reversed(samples):
        if not test(sample):
            break
        run += 1
    if run < 2:  # one sample is a blip, not a trend
        return False
    return (now - samples[-run].at).total_seconds() >= sustain


def _decay(rule: str, summary: str, **figures) -> Finding:
    return Finding(rule, "bad", summary, figures=figures)


def findings(dog: Watchdog, samples: list[Sample], now) -> list[Finding]:
    """What the rules say about the recent samples (oldest first). Pure: no side effects."""
    if not samples:
        return []
    latest = samples[-1]
    found = []
    if dog.liveness_failures:
        last = samples[-dog.liveness_failures :]
        if len(last) == dog.liveness_failures and all(not s.probe_ok for s in last):
            found.append(
                _decay(
                    "liveness",
                    f"{dog.liveness_failures} failed probes in a row ({last[-1].data.get('detail', '')})",
                    failures=dog.liveness_failures,
                )
            )
    window = [s for s in samples if s.probe_ok]  # a failed probe is liveness's business
    sustain = dog.sustain_seconds
    if dog.p95_limit_ms and _sustained(window, lambda s: (s.p95_ms or 0) > dog.p95_limit_ms, sustain, now):
        found.append(
            _decay(
                "p95_limit",
                f"p95 {latest.p95_ms:.0f} ms above {dog.p95_limit_ms:.0f} ms for {sustain} s",
                p95_ms=latest.p95_ms,
                limit_ms=dog.p95_limit_ms,
            )
        )
    if dog.p95_factor and window:
        baseline = baseline_p95(latest)
        if baseline and _sustained(window, lambda s: (s.p95_ms or 0) > dog.p95_factor * baseline, sustain, now):
            found.append(
                _decay(
                    "p95_factor",
                    f"p95 {latest.p95_ms:.0f} ms is over {dog.p95_factor:g}x its baseline {baseline:.0f} ms",
                    p95_ms=latest.p95_ms,
                    baseline_ms=baseline,
                    factor=dog.p95_factor,
                )
            )
    limit = dog.fragmentation_limit
    if limit is not None and _sustained(window, lambda s: (s.fragmentation or 0) > limit, sustain, now):
        found.append(
            _decay(
                "fragmentation",
                f"allocator fragmentation {latest.fragmentation:.0%} above {limit:.0%}",
                fragmentation=latest.fragmentation,
            )
        )
    limit = dog.close_wait_limit
    if limit is not None and _sustained(window, lambda s: (s.close_wait or 0) > limit, sustain, now):
        found.append(
            _decay(
                "close_wait",
                f"{latest.close_wait} connections in CLOSE_WAIT (limit {limit})",
                close_wait=latest.close_wait,
            )
        )
    if dog.gpu_memory_percent is not None:

        def high(s: Sample) -> bool:
            return bool(s.gpu_used and s.gpu_total and 100 * s.gpu_used / s.gpu_total > dog.gpu_memory_percent)

        if _sustained(window, high, sustain, now):
            found.append(
                _decay(
                    "gpu_memory",
                    f"GPU memory {100 * latest.gpu_used / latest.gpu_total:.0f}% above {dog.gpu_memory_percent:g}%",
                    gpu_used=latest.gpu_used,
                    gpu_total=latest.gpu_total,
                )
            )
    if dog.error_burst and (latest.log_errors or 0) >= dog.error_burst:
        signatures = latest.data.get("signatures", {})
        found.append(
            _decay(
                "error_burst",
                f"{latest.log_errors} error lines in one interval ({signatures})",
                errors=latest.log_errors,
                signatures=signatures,
            )
        )
    return found


def action_for(dog: Watchdog, finding: Finding) -> str:
    """A dead server is restarted; soft decay gets the action its watchdog is set to."""
    return Watchdog.Action.RESTART if finding.rule == "liveness" else dog.decay_action


def evaluate(instance, now=None) -> Operation | str | None:
    """Run the instance's rules on its latest samples; act, alert, or do nothing.

    Returns the operation requested, "alerted", or None.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # One evaluation of an instance at a time (rounds may overlap on a busy worker).
        dog = Watchdog.objects.select_for_update().filter(instance=instance, enabled=True).first()
        if dog is None or not instance.enabled:
            return None
        return _evaluate(dog, instance, now)


def _evaluate(dog: Watchdog, instance, now) -> Operation | str | None:
    if instance.operations.filter(state__in=Operation.ACTIVE_STATES).exists():
        return None
    if active_hold(instance, now) is not None:
        return None  # someone is working on it: not the watchdog's to act, nor to alert
    last_finished = instance.operations.exclude(finished=None).order_by("-finished").first()
    if _stopped_on_purpose(last_finished):
        return None  # down because someone stopped it: not the watchdog's to start
    horizon = now - timedelta(seconds=max(dog.sustain_seconds, 60) + 30)
    recent = list(Sample.objects.filter(instance=instance, resolution=Sample.RAW, at__gte=horizon).order_by("at"))
    if last_finished is not None:
        recent = [s for s in recent if s.at > last_finished.finished]  # only what the current process did
    held_until = last_hold_end(instance, now)
    if held_until is not None:
        recent = [s for s in recent if s.at > held_until]  # what it did on hold was someone's work
    latest = recent[-1] if recent else None
    grace = timedelta(seconds=dog.startup_grace_seconds)
    if last_finished is not None and now - last_finished.finished < grace and _starting(last_finished, latest):
        return None  # the model may still be loading: a startup probe's grace
    if latest is not None and latest.probe_ok and (latest.data.get("uptime") or 0) < dog.startup_grace_seconds:
        return None  # a fresh process's figures are not its normal yet
    found = findings(dog, recent, now)
    if not found:
        return None
    first = next((f for f in found if f.rule == "liveness"), found[0])
    return _act(dog, first, now)


def _stopped_on_purpose(last: Operation | None) -> bool:
    return last is not None and last.kind == Operation.Kind.STOP and last.state == Operation.State.SUCCEEDED


def _starting(last: Operation, latest: Sample | None) -> bool:
    """Whether the server is still starting after the operation: the grace is for that only. Once it
    has been ready (as Kubernetes' startupProbe hands over to the livenessProbe), or when its process
    is gone, liveness applies at once."""
    if latest is not None and latest.status == "down" and not latest.data.get("pids"):
        return False  # no process: nothing is starting
    if last.state == Operation.State.SUCCEEDED and last.kind in (Operation.Kind.START, Operation.Kind.RESTART):
        return False  # its ready step saw it ready
    return not Sample.objects.filter(
        instance_id=last.instance_id, resolution=Sample.RAW, at__gt=last.finished, status="ready"
    ).exists()


def _act(dog: Watchdog, finding: Finding, now) -> Operation | str | None:
    instance = dog.instance
    hour = instance.operations.filter(trigger=Operation.Trigger.WATCHDOG, created__gte=now - timedelta(hours=1))
    count = hour.count()
    text = f"{finding.rule}: {finding.summary}"
    action = action_for(dog, finding)
    if count >= dog.max_actions_per_hour or dog.needs_attention_since:
        if dog.needs_attention_since is None:
            return _needs_attention(
                dog,
                finding,
                now,
                reason=f"{count} automatic actions within an hour; last: {text}",
                said=f"The watchdog stopped acting after {count} actions in an hour. Latest finding: {text}",
            )
        return None
    last = hour.order_by("-created").first()
    if last is not None and now - last.created < timedelta(seconds=dog.backoff_seconds * 2 ** (count - 1)):
        return None  # backing off
    if action == Watchdog.Action.ALERT:
        since = now - timedelta(seconds=dog.backoff_seconds)
        if AlertDelivery.objects.filter(event=WATCHDOG, instance_name=instance.name, created__gte=since).exists():
            return None  # alerted recently about this instance
        notify(WATCHDOG, instance, f"{instance.name}: {finding.rule}", text, {"figures": finding.figures})
        return "alerted"
    futile = _futile(dog, finding, now)
    if futile is not None:
        return _needs_attention(
            dog,
            finding,
            now,
            reason=futile,
            said=f"The watchdog does not act again: {futile}. Latest finding: {text}",
        )
    with transaction.atomic():
        try:
            operation, created = request_operation(
                instance,
                action,
                reason=f"watchdog {text}"[:500],
                trigger=Operation.Trigger.WATCHDOG,
                options={"rule": finding.rule, "figures": finding.figures},
            )
        except OperationRefused as exc:
            log.info("watchdog of %s could not act: %s", instance.name, exc)
            return None
        if created:
            notify(
                WATCHDOG,
                instance,
                f"{instance.name}: watchdog {action.replace('_', ' ')}",
                text,
                {"rule": finding.rule, "figures": finding.figures, "operation": operation.pk},
            )
    return operation


def _needs_attention(dog: Watchdog, finding: Finding, now, *, reason: str, said: str) -> str | None:
    """The watchdog stops acting on the instance until an operator looks, and says so once."""
    instance = dog.instance
    with transaction.atomic():
        # One UPDATE decides: of two evaluations at once, only one says so (and alerts).
        won = Watchdog.objects.filter(pk=dog.pk, needs_attention_since=None).update(
            needs_attention_since=now, attention_reason=reason[:300]
        )
        if not won:
            return None
        notify(
            NEEDS_ATTENTION,
            instance,
            f"{instance.name} needs attention",
            said,
            {"rule": finding.rule, "figures": finding.figures},
        )
    return "alerted"


def _futile(dog: Watchdog, finding: Finding, now) -> str | None:
    """Why acting again for latency would not help: the watchdog's last action on the instance, for
    latency too, within a day and since an operator last cleared "needs attention", succeeded and did
    not lower it (its effect, console/operations/effect.py). Restarting a server that is slow for
    another reason (load, inputs, the GPU) only takes it away from its users again. None where it did
    help, or cannot be told yet."""
    if finding.rule not in LATENCY_RULES:
        return None
    day_ago = now - timedelta(days=1)
    since = max(day_ago, dog.cleared_at or day_ago)
    last = (
        dog.instance.operations.filter(
            trigger=Operation.Trigger.WATCHDOG, state=Operation.State.SUCCEEDED, finished__gte=since
        )
        .order_by("-finished")
        .first()
    )
    if last is None or (last.options or {}).get("rule") not in LATENCY_RULES:
        return None
    p95 = with_latency_effects(dog.instance, [last], now)[0].latency_effect  # p95 alone: one column read
    if p95 is None or p95["change"] in (None, "lower"):
        return None
    return (
        f"its {last.get_kind_display().lower()} #{last.pk} for latency did not lower it (p95 {p95['before']:.0f} ms"
        f" before, {p95['after']:.0f} ms after): not decay a restart fixes"
    )
