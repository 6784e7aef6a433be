"""JSON API: the same operations, forms and permissions as the pages, for scripts and other tools."""

import json
from functools import wraps

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from console.api.auth import TokenRefused, user_from_token
from console.api.metrics import ConsoleCollector
from console.instances.models import Host, Instance
from console.operations.effect import effect
from console.operations.forms import OperationForm, RolloutForm, form_errors
from console.operations.holds import HoldRefused, end_holds, place_holds
from console.operations.models import Operation, Rollout
from console.operations.request import OperationRefused, request_operation
from console.operations.rollout import request_rollout
from console.operations.summaries import instance_summaries, operation_summary, rollout_summary
from console.telemetry.diagnose import diagnose
from console.telemetry.hosts import host_summaries, host_summary, hosts_with_counts

OPERATE = "instances.operate_instance"
MAX_BODY_BYTES = 64 * 1024


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _parse_json(request) -> dict | JsonResponse:
    """The body as a JSON object, or the 400 that says what is wrong with it."""
    if len(request.body) > MAX_BODY_BYTES:
        return error(400, f"The body is limited to {MAX_BODY_BYTES // 1024} KiB.")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return error(400, "The body must be JSON.")
    if not isinstance(body, dict):
        return error(400, "The body must be a JSON object.")
    return body


def api_view(methods: list[str]):
    """Authenticate (a token, or a session whose writes pass the CSRF check), require the view
    permission, and parse a JSON body once into request.json."""

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.has_perm("instances.view_instance"):
                return error(403, "Your role may not see instances.")
            if request.method in ("POST", "PUT", "PATCH"):
                body = _parse_json(request)
                if isinstance(body, JsonResponse):
                    return body
                request.json = body
            return view(request, *args, **kwargs)

        session_checked = csrf_protect(checked)  # CSRF_FAILURE_VIEW answers API paths in JSON

        @csrf_exempt
        @require_http_methods(methods)
        @wraps(view)
        def authenticate(request, *args, **kwargs):
            try:
                user = user_from_token(request)
            except TokenRefused as refused:
                return error(401, str(refused))
            if user is not None:
                request.user = user
                return checked(request, *args, **kwargs)
            if not request.user.is_authenticated:
                return error(401, "Authenticate with 'Authorization: Bearer <token>' or a console session.")
            return session_checked(request, *args, **kwargs)

        return authenticate

    return decorate


@api_view(["GET"])
def instances(request):
    """Every instance; ?host= and ?group= filter (an unknown host is a 404, not an empty list)."""
    items = Instance.objects.select_related("host").order_by("name")
    host, group = request.GET.get("host"), request.GET.get("group")
    if host:
        if not Host.objects.filter(name=host).exists():
            return error(404, f"no host named {host[:100]!r}")
        items = items.filter(host__name=host)
    if group:
        items = items.filter(group=group)
    return JsonResponse({"instances": instance_summaries(items)})


@api_view(["GET"])
def hosts(request):
    """Every host: online (its worker reported lately), its last report's age, GPUs and counts."""
    return JsonResponse({"hosts": host_summaries()})


@api_view(["GET"])
def host(request, name: str):
    item = get_object_or_404(hosts_with_counts(), name=name)
    return JsonResponse(host_summary(item))


@api_view(["GET"])
def instance(request, name: str):
    item = get_object_or_404(Instance.objects.select_related("host"), name=name)
    recent = [operation_summary(op) for op in item.operations.select_related("instance", "requested_by")[:10]]
    return JsonResponse({**instance_summaries([item])[0], "operations": recent})


@api_view(["GET"])
def diagnosis(request, name: str):
    """The runbook's checklist on the last 15 minutes: a script's check before it restarts (verdict
    "soft_decay": a restart is the cure; "healthy": nothing to cure), as the page's Diagnose says it."""
    return JsonResponse(diagnose(get_object_or_404(Instance, name=name)).summary())


def not_flags(body: dict, names: tuple) -> str | None:
    """Why the body's optional flags among `names` are not booleans, or None."""
    wrong = [repr(name) for name in names if name in body and not isinstance(body[name], bool)]
    return f"{' and '.join(wrong)} must be true or false." if wrong else None


@api_view(["POST"])
def operate(request, name: str):
    item = Instance.objects.filter(name=name).first()
    if item is None:
        return error(404, f"No instance named {name!r}.")
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    if not isinstance(request.json.get("reason", ""), str):
        return error(400, "'reason' must be a string.")
    if problem := not_flags(request.json, ("recreate", "reload_weights", "only_if_needed")):
        return error(400, problem)
    form = OperationForm(
        {
            "kind": request.json.get("kind"),
            "reason": request.json.get("reason", ""),
            "recreate": request.json.get("recreate") is True,
            "reload_weights": request.json.get("reload_weights") is True,
        }
    )
    if not form.is_valid():
        return error(400, form_errors(form))
    try:
        operation, created = request_operation(
            item,
            form.cleaned_data["kind"],
            user=request.user,
            reason=form.cleaned_data["reason"],
            trigger=Operation.Trigger.API,
            options=form.options(),
            request=request,
            only_if_needed=request.json.get("only_if_needed") is True,
        )
    except OperationRefused as exc:
        return error(409, str(exc))
    return JsonResponse({**operation_summary(operation), "joined": not created}, status=202 if created else 200)


def _holds_asked(request, instances: list, *, not_held: str):
    """POST {"minutes": 120, "reason": "driver upgrade"}: hold every one of `instances`, all or none (a
    hold already on one is replaced); the holds placed. DELETE: end those on hold; the holds ended, or
    a 409 saying `not_held` when none was. A refusal is the error response itself."""
    who = {"user": request.user, "request": request}
    if request.method == "DELETE":
        return end_holds(instances, **who) or error(409, not_held)
    try:
        return place_holds(instances, minutes=request.json.get("minutes"), reason=request.json.get("reason"), **who)
    except HoldRefused as exc:
        return error(400, str(exc))


@api_view(["POST", "DELETE"])
def hold(request, name: str):
    """Hold the instance (the watchdog, rollouts and schedules leave it alone, its alerts are silenced)
    or end its hold: see _holds_asked."""
    item = Instance.objects.filter(name=name).first()
    if item is None:
        return error(404, f"No instance named {name!r}.")
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    holds = _holds_asked(request, [item], not_held=f"{name} is not on hold.")
    if isinstance(holds, JsonResponse):
        return holds
    return JsonResponse({"instance": name, "hold": holds[0].summary() if request.method == "POST" else None})


@api_view(["POST", "DELETE"])
def host_hold(request, name: str):
    """Hold every instance on the host, for work on the machine itself (each hold is the instance's own,
    as if placed alone), or end the holds of those on hold: see _holds_asked."""
    host = Host.objects.filter(name=name).first()
    if host is None:
        return error(404, f"No host named {name!r}.")
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    instances = list(host.instances.order_by("name"))
    if not instances:
        return error(409, f"No instance is registered on {name}.")
    holds = _holds_asked(request, instances, not_held=f"No instance on {name} is on hold.")
    if isinstance(holds, JsonResponse):
        return holds
    if request.method == "DELETE":
        return JsonResponse({"host": name, "ended": [hold.instance.name for hold in holds]})
    return JsonResponse({"host": name, "holds": {hold.instance.name: hold.summary() for hold in holds}})


@api_view(["GET"])
def operation(request, pk: int):
    """The operation with its steps, and for a restart or soft reset that succeeded its effect: the
    runbook's figures before it against after it (console/operations/effect.py)."""
    item = get_object_or_404(Operation.objects.select_related("instance", "requested_by"), pk=pk)
    return JsonResponse({**operation_summary(item), "effect": effect(item)})


@api_view(["POST"])
def rollouts(request):
    """Body: {"group": "gpu-a"} or {"instances": ["a", "b"]}, plus "strategy", "skip_busy",
    "skip_healthy", "reload_weights" and "reason"."""
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    body = request.json
    names = body.get("instances", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return error(400, "'instances' must be a list of names.")
    if not all(isinstance(body.get(key, ""), str) for key in ("group", "strategy", "reason")):
        return error(400, "'group', 'strategy' and 'reason' must be strings.")
    if problem := not_flags(body, ("skip_busy", "skip_healthy", "reload_weights")):
        return error(400, problem)
    form = RolloutForm(
        {
            "group": body.get("group") or "",
            "instances": " ".join(names),
            "strategy": body.get("strategy", "rolling"),
            "skip_busy": body.get("skip_busy") is True,
            "skip_healthy": body.get("skip_healthy") is True,
            "reload_weights": body.get("reload_weights") is True,
            "reason": body.get("reason", ""),
        }
    )
    if not form.is_valid():
        return error(400, form_errors(form))
    data = form.cleaned_data
    rollout = request_rollout(
        data["targets"],
        strategy=data["strategy"],
        user=request.user,
        reason=data["reason"],
        trigger=Operation.Trigger.API,
        skip_busy=data["skip_busy"],
        skip_healthy=data["skip_healthy"],
        reload_weights=data["reload_weights"],
        request=request,
    )
    return JsonResponse(rollout_summary(rollout), status=202)


@api_view(["GET"])
def metrics(request):
    """The console's figures in Prometheus's text format (a bearer token with the view permission)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsoleCollector(scrape_token=getattr(request, "api_token", None)))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@api_view(["GET"])
def rollout(request, pk: int):
    return JsonResponse(rollout_summary(get_object_or_404(Rollout, pk=pk)))
