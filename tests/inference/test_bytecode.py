"""inference.bytecode: a start that compiles its packages from source says so."""

import importlib
import logging
import os
import sys

from inference import bytecode

log = logging.getLogger("test.bytecode")


def _import_new_package(root, monkeypatch, name: str, write_bytecode: bool) -> None:
    """A package of one module written under `root` and imported, Python writing its bytecode or not."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", not write_bytecode)
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.import_module(name)


def test_a_package_imported_without_writing_its_bytecode_is_named(tmp_path, monkeypatch, caplog):
    _import_new_package(tmp_path, monkeypatch, "uncached_pkg", write_bytecode=False)
    try:
        with caplog.at_level(logging.WARNING, logger=log.name):
            assert bytecode.warn_if_uncached(log, 9.87, ("uncached_pkg", "json")) == ["uncached_pkg"]
    finally:
        del sys.modules["uncached_pkg"]
    [record] = caplog.records
    assert "without cached bytecode" in record.getMessage()
    assert record.fields["packages"] == ["uncached_pkg"]
    assert record.fields["import_seconds"] == 9.87
    assert "PYTHONDONTWRITEBYTECODE" in record.fields["why"]


def test_a_package_whose_bytecode_was_written_is_not(tmp_path, monkeypatch, caplog):
    _import_new_package(tmp_path, monkeypatch, "cached_pkg", write_bytecode=True)
    try:
        assert os.path.exists(sys.modules["cached_pkg"].__spec__.cached)  # written where Python looks for it
        with caplog.at_level(logging.WARNING, logger=log.name):
            assert bytecode.warn_if_uncached(log, 1.0, ("cached_pkg", "not_imported_at_all")) == []
    finally:
        del sys.modules["cached_pkg"]
    assert not caplog.records


def test_the_reason_names_what_stopped_the_write(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert "PYTHONDONTWRITEBYTECODE" in bytecode.why_uncached()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert "read-only" in bytecode.why_uncached()
