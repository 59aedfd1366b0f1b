"""Shared test helpers."""

from __future__ import annotations

import importlib
import os
import shutil
import socket

import pytest


def require_binary(name: str, apt_package: str) -> str:
    """Return the path of a system binary a test needs.

    Under CI (``CI`` set) a missing binary is a failure: ``.ci/run`` installs it. Elsewhere the
    test is skipped with a message naming the apt package to install.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is not None:
        return path
    message = f"{name} not found: install it with `apt-get install {apt_package}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(module: str, extra: str) -> None:
    """Make sure an optional dependency a test needs is importable.

    Under CI (``CI`` set) a missing one is a failure: ``make`` installs every extra. Elsewhere
    the test is skipped with a message naming the package and the extra that brings it.
    """
    try:
        importlib.import_module(module)
    except ImportError:
        pass
    else:
        return
    message = (f"{module} is not installed: it comes with the {extra!r} extra "
               f"(`pip install -e '.[{extra}]'`)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    return free_port()
