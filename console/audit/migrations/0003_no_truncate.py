"""TRUNCATE skips row triggers: on PostgreSQL a statement trigger refuses it too, for every role but
a database superuser (who could drop any trigger anyway, and whom the test run uses to reset its
database). The console's own role, whatever an attacker makes it run, cannot empty the trail."""

from django.db import migrations

POSTGRES = """
CREATE OR REPLACE FUNCTION audit_no_truncate() RETURNS trigger AS $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN RETURN NULL; END IF;
  RAISE EXCEPTION 'audit entries are append-only';
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_auditentry
FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_triggers")]
    operations = [migrations.RunPython(create)]  # not reversible, as 0002
