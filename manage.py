#!/usr/bin/env python
"""Django's command-line entry point for Instance Console."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    from django.core.management import execute_from_command_line

    from console.paths import prepare

    prepare()  # the var directory and the kept secret, before the settings read them
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
