"""Template source rules that Django does not enforce itself."""

from pathlib import Path

from django.conf import settings

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def test_single_line_comments_close_on_their_line():
    # Django's {# #} ends at the line's end: an unclosed one is shown to the operator as text.
    unclosed = []
    for path in TEMPLATES.rglob("*.html"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            start = line.find("{#")
            if start != -1 and "#}" not in line[start:]:
                unclosed.append(f"{path.relative_to(TEMPLATES)}:{number}")
    assert unclosed == [], f"use {{% comment %}} for comments over several lines: {unclosed}"
