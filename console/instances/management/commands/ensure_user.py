"""Create a console account with a role if it does not exist (deployments configured as code)."""

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from console.instances.roles import ADMIN, OPERATOR, VIEWER, ensure_roles


class Command(BaseCommand):
    help = "Create USERNAME with a role and the password from an environment variable (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=[VIEWER, OPERATOR, ADMIN], required=True)
        parser.add_argument("--password-env", required=True, help="Environment variable holding the password.")

    def handle(self, *args, username, role, password_env, **options):
        password = os.environ.get(password_env, "")
        if len(password) < 12:
            raise CommandError(f"${password_env} must hold a password of at least 12 characters.")
        ensure_roles()
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            self.stdout.write(f"{username} exists (password unchanged)")
            return
        user = User.objects.create_user(username=username, password=password, is_staff=role == ADMIN)
        user.groups.add(Group.objects.get(name=role))
        self.stdout.write(f"created {username} ({role})")
