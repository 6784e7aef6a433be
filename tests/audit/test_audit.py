"""The audit trail: every action with who, when, from where, why and outcome; append-only; CSV."""

import csv
import io

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client

from console.audit.models import AppendOnlyError, AuditEntry
from console.audit.record import record
from console.operations.models import Operation
from console.operations.progress import finish
from tests.factories import process_instance, user


@pytest.fixture
def operator(db):
    process_instance("audit-a", command=["true"])
    account = user("audit-op", role="operator")
    client = Client(REMOTE_ADDR="10.1.2.3")
    client.force_login(account)
    return client


def test_a_restart_from_the_page_is_recorded_with_address_reason_and_outcome(operator):
    operator.post("/instances/audit-a/operations/", {"kind": "restart", "reason": "p95 creeping"})
    operator.post("/instances/audit-a/operations/", {"kind": "stop", "reason": "second click"})
    requested, refused = AuditEntry.objects.filter(action__in=["operation.restart", "operation.stop"]).order_by("id")
    assert (requested.actor, requested.address, requested.target, requested.reason) == (
        "audit-op",
        "10.1.2.3",
        "instance audit-a",
        "p95 creeping",
    )
    assert requested.outcome.startswith("queued as #")
    assert refused.outcome.startswith("refused: Restart #") and refused.reason == "second click"
    operation = Operation.objects.get()
    finish(operation, "failed", "ready: not ready within 60 s")
    done = AuditEntry.objects.get(action="operation.restart.finished")
    assert done.actor == "audit-op" and done.outcome == "failed: ready: not ready within 60 s"


def test_logins_failures_and_admin_changes_are_recorded(db):
    user("audit-login", role="viewer")
    client = Client(REMOTE_ADDR="10.9.9.9")
    client.post("/accounts/login/", {"username": "audit-login", "password": "wrong"})
    client.post("/accounts/login/", {"username": "audit-login", "password": "pw-for-tests-123"})
    outcomes = list(AuditEntry.objects.filter(action="login").order_by("id").values_list("actor", "address", "outcome"))
    assert outcomes == [
        ("audit-login", "10.9.9.9", "refused: wrong username or password"),
        ("audit-login", "10.9.9.9", "signed in"),
    ]


def test_entries_can_be_neither_changed_nor_deleted_even_in_sql(db):
    entry = record("test.action", actor="system", target="x", outcome="ok")
    entry.outcome = "rewritten"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    for statement in ("UPDATE audit_auditentry SET outcome = 'x'", "DELETE FROM audit_auditentry"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEntry.objects.get().outcome == "ok"


def test_page_filters_and_csv_export(operator):
    record("schedule.created", actor="someone", target="schedule nightly", reason='=HYPERLINK("x")', outcome="ok")
    operator.post("/instances/audit-a/operations/", {"kind": "restart", "reason": "nightly"})
    page = operator.get("/audit/", {"action": "operation"}).content.decode()
    assert "operation.restart" in page and "schedule.created" not in page
    assert operator.get("/audit/", {"since": "yesterday"}).status_code == 400
    response = operator.get("/audit.csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["at", "actor", "address", "action", "target", "reason", "outcome"]
    by_action = {row[3]: row for row in rows[1:]}
    assert by_action["operation.restart"][1:3] == ["audit-op", "10.1.2.3"]
    assert by_action["schedule.created"][5] == '\'=HYPERLINK("x")'  # no formula in a spreadsheet


@pytest.mark.django_db(transaction=True)  # TRUNCATE waits for every other transaction on the table
def test_the_console_s_own_database_role_cannot_empty_the_trail():
    """TRUNCATE skips row triggers; a statement trigger refuses it for any role but a superuser."""
    import psycopg

    if connection.vendor != "postgresql":
        pytest.fail("run on PostgreSQL (make test)")
    record("test.kept", actor="system", outcome="ok")
    settings = connection.settings_dict
    admin = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        password=settings["PASSWORD"],
        dbname=settings["NAME"],
        autocommit=True,
    )
    with admin:
        admin.execute("DROP ROLE IF EXISTS audit_app")
        admin.execute("CREATE ROLE audit_app LOGIN PASSWORD 'audit-app-pw'")
        admin.execute("GRANT ALL ON audit_auditentry TO audit_app")
        try:
            with psycopg.connect(
                host=settings["HOST"],
                port=settings["PORT"],
                user="audit_app",
                password="audit-app-pw",
                dbname=settings["NAME"],
                autocommit=True,
            ) as app:
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    app.execute("TRUNCATE audit_auditentry")
        finally:
            admin.execute("REVOKE ALL ON audit_auditentry FROM audit_app")
            admin.execute("DROP ROLE audit_app")
    assert AuditEntry.objects.filter(action="test.kept").exists()


def test_the_trail_s_triggers_cannot_be_migrated_away(db):
    from django.db.migrations.exceptions import IrreversibleError
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    with pytest.raises(IrreversibleError):
        executor.migrate([("audit", "0001_initial")])


def test_an_action_whose_record_cannot_be_written_fails(db, monkeypatch):
    def broken(**fields):
        raise DatabaseError("disk full")

    monkeypatch.setattr(AuditEntry.objects, "create", broken)
    with pytest.raises(DatabaseError):
        record("test.lost", actor="system", outcome="ok")
