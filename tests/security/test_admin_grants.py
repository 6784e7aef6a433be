"""An admin who is not a superuser cannot make anyone a superuser, grant raw permissions, or take
over a superuser's account through the admin."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from console.audit.models import AuditEntry
from tests.factories import user


@pytest.fixture
def admin_client(db):
    account = user("site-admin", role="admin")
    account.is_staff = True
    account.save()
    client = Client()
    client.force_login(account)
    return client


def change_form(client, target) -> dict:
    page = client.get(f"/admin/auth/user/{target.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    return {k: v for k, v in data.items() if v is not None}


def test_a_non_superuser_admin_cannot_grant_superuser_or_raw_permissions(admin_client):
    target = user("someone", role="viewer")
    data = change_form(admin_client, target)
    assert "is_superuser" not in data and "user_permissions" not in data  # read-only for this admin
    data.update(
        is_superuser="on",
        user_permissions=[Permission.objects.get(codename="delete_instance").pk],
        date_joined_0="2026-01-01",
        date_joined_1="00:00:00",
    )
    admin_client.post(f"/admin/auth/user/{target.pk}/change/", data)
    target.refresh_from_db()
    assert not target.is_superuser and not target.user_permissions.exists()
    assert AuditEntry.objects.filter(action="admin.changed", actor="site-admin", target__contains="someone").exists()


def test_a_superuser_s_account_is_out_of_reach(admin_client):
    root = get_user_model().objects.create_superuser("root", password="root-pass-123")
    assert admin_client.get(f"/admin/auth/user/{root.pk}/change/").status_code in (302, 403, 404)
    assert admin_client.post(
        f"/admin/auth/user/{root.pk}/password/", {"password1": "x", "password2": "x"}
    ).status_code in (302, 403, 404)
    assert admin_client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code in (302, 403, 404)
    root.refresh_from_db()
    assert root.check_password("root-pass-123")
