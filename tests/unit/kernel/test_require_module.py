"""tests.conftest.require_module: a missing optional package skips a test naming its extra,
and fails it under CI (``CI`` set), where every extra is installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import require_module


def test_an_installed_module_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require_module("json", "demo")  # neither skips nor fails


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package that is found but cannot be imported, as when an extra is half there."""
    name = "hems_missing_extra_pkg"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _skips(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_module(module, "demo")
    assert f"{module} is not installed" in str(skipped.value)
    assert "pip install -e '.[demo]'" in str(skipped.value)


def test_an_absent_module_skips_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _skips("hems_no_such_module_anywhere", monkeypatch)


def test_a_module_that_fails_to_import_skips_too(broken: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _skips(broken, monkeypatch)


def test_a_missing_module_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="the 'demo' extra"):
        require_module("hems_no_such_module_anywhere", "demo")
