"""The per-instance lock: many clicks make one operation; other kinds wait their turn."""

import threading

import pytest
from django.db import connection

from console.operations.models import FinishedOperationError, Operation
from console.operations.request import OperationRefused, request_operation
from tests.factories import process_instance


@pytest.mark.django_db(transaction=True)
def test_fifty_simultaneous_restart_clicks_make_one_operation():
    instance = process_instance("lock-a", command=["true"])
    barrier = threading.Barrier(50)
    results, errors = [], []

    def click():
        try:
            barrier.wait()
            results.append(request_operation(instance, "restart", reason="click"))
        except Exception as exc:  # any failure is a test failure below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert Operation.objects.filter(instance=instance).count() == 1
    assert sum(created for _, created in results) == 1
    assert len({op.pk for op, _ in results}) == 1


@pytest.mark.django_db
def test_another_kind_while_one_is_active_is_refused_with_reason():
    instance = process_instance("lock-b", command=["true"])
    restart, _ = request_operation(instance, "restart")
    with pytest.raises(OperationRefused, match=f"Restart #{restart.pk} is queued"):
        request_operation(instance, "stop")


@pytest.mark.django_db
def test_disabled_instance_is_refused():
    instance = process_instance("lock-c", command=["true"], enabled=False)
    with pytest.raises(OperationRefused, match="disabled"):
        request_operation(instance, "restart")


@pytest.mark.django_db
def test_finished_operation_is_never_edited():
    instance = process_instance("lock-d", command=["true"])
    operation, _ = request_operation(instance, "restart")
    Operation.objects.filter(pk=operation.pk).update(state="succeeded")
    operation.refresh_from_db()
    operation.reason = "rewritten history"
    with pytest.raises(FinishedOperationError):
        operation.save()
    # and the lock is free again
    assert request_operation(instance, "restart")[1] is True
