"""JSON API: the same operations and permissions as the pages, for scripts and other tools."""

import json
from functools import wraps

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from console.api.auth import user_from_token
from console.instances.models import Instance
from console.instances.status import instance_summary
from console.operations.forms import RolloutForm
from console.operations.models import Operation, Rollout
from console.operations.progress import summary
from console.operations.request import OperationRefused, request_operation
from console.operations.rollout import request_rollout

OPERATE = "instances.operate_instance"


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def api_view(methods: list[str]):
    """Token (or session) authentication; CSRF applies only to session-authenticated calls."""

    def decorate(view):
        @csrf_exempt
        @require_http_methods(methods)
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            user = user_from_token(request)
            if user is None:
                if not request.user.is_authenticated:
                    return error(401, "Authenticate with 'Authorization: Bearer <token>' or a console session.")
                if request.method not in ("GET", "HEAD"):
                    from django.middleware.csrf import CsrfViewMiddleware

                    reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
                    if reason is not None:
                        return error(403, "CSRF check failed for a session-authenticated request.")
            else:
                request.user = user
            if not request.user.has_perm("instances.view_instance"):
                return error(403, "Your role may not see instances.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


@api_view(["GET"])
def instances(request):
    items = Instance.objects.select_related("host").order_by("name")
    return JsonResponse({"instances": [instance_summary(i) for i in items]})


@api_view(["GET"])
def instance(request, name: str):
    item = get_object_or_404(Instance.objects.select_related("host"), name=name)
    recent = [summary(op) for op in item.operations.select_related("requested_by")[:10]]
    return JsonResponse({**instance_summary(item), "operations": recent})


@api_view(["POST"])
def operate(request, name: str):
    item = Instance.objects.filter(name=name).first()
    if item is None:
        return error(404, f"No instance named {name!r}.")
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "The body must be JSON.")
    if not isinstance(body, dict):
        return error(400, "The body must be a JSON object.")
    kind = body.get("kind")
    if kind not in Operation.Kind.values:
        return error(400, f"'kind' must be one of {', '.join(Operation.Kind.values)}.")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        return error(400, "'reason' must be a string of at most 500 characters.")
    options = {"recreate": True} if body.get("recreate") is True else {}
    try:
        operation, created = request_operation(
            item,
            kind,
            user=request.user,
            reason=reason,
            trigger=Operation.Trigger.API,
            options=options,
            request=request,
        )
    except OperationRefused as exc:
        return error(409, str(exc))
    return JsonResponse({**summary(operation), "joined": not created}, status=202 if created else 200)


@api_view(["GET"])
def operation(request, pk: int):
    item = get_object_or_404(Operation.objects.select_related("instance", "requested_by"), pk=pk)
    return JsonResponse(summary(item))


def rollout_summary(rollout) -> dict:
    return {
        "id": rollout.pk,
        "strategy": rollout.strategy,
        "instances": rollout.instance_names,
        "state": rollout.state,
        "results": rollout.results,
        "error": rollout.error,
        "trigger": rollout.trigger,
        "reason": rollout.reason,
        "created": rollout.created.isoformat(),
        "finished": rollout.finished.isoformat() if rollout.finished else None,
    }


@api_view(["POST"])
def rollouts(request):
    """Body: {"group": "gpu-a"} or {"instances": ["a", "b"]}, plus "strategy", "skip_busy", "reason"."""
    if not request.user.has_perm(OPERATE):
        return error(403, "Your role may look at instances but not operate them.")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "The body must be JSON.")
    if not isinstance(body, dict):
        return error(400, "The body must be a JSON object.")
    names = body.get("instances", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return error(400, "'instances' must be a list of names.")
    form = RolloutForm(
        {
            "group": body.get("group") or "",
            "instances": " ".join(names),
            "strategy": body.get("strategy", "rolling"),
            "skip_busy": body.get("skip_busy") is True,
            "reason": body.get("reason", ""),
        }
    )
    if not form.is_valid():
        messages = [
            str(m) if field == "__all__" else f"'{field}': {m}" for field, errors in form.errors.items() for m in errors
        ]
        return error(400, " ".join(messages))
    data = form.cleaned_data
    rollout = request_rollout(
        data["targets"],
        strategy=data["strategy"],
        user=request.user,
        reason=data["reason"],
        trigger=Operation.Trigger.API,
        skip_busy=data["skip_busy"],
        request=request,
    )
    return JsonResponse(rollout_summary(rollout), status=202)


@api_view(["GET"])
def rollout(request, pk: int):
    return JsonResponse(rollout_summary(get_object_or_404(Rollout, pk=pk)))
