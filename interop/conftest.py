"""Fixtures for the interop suite. scripts/interop.sh starts the server and sets
CUSTOS_INTEROP_BASE_URL and CUSTOS_INTEROP_ADMIN_TOKEN; nothing here starts anything."""

from __future__ import annotations

import os
import warnings

import pytest

# Authlib 1.9 prefers the httpx2 fork and warns once, on import, when it falls back to httpx
# (which its documentation and this suite use). It also installs an "always" filter for its own
# warnings, ahead of pytest.ini's, so the import is made here with that one warning silenced:
# authlib.deprecate first, so that its filter is in place before ours goes in front of it.
import authlib.deprecate  # noqa: E402,F401  (isort: skip)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    import authlib.integrations.httpx_client  # noqa: F401

from custos import Custos  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    missing = [
        name
        for name in ("CUSTOS_INTEROP_BASE_URL", "CUSTOS_INTEROP_ADMIN_TOKEN")
        if not os.environ.get(name)
    ]
    if missing:
        raise pytest.UsageError(
            f"{', '.join(missing)} not set: run the suite through scripts/interop.sh"
        )


@pytest.fixture(scope="session")
def custos() -> Custos:
    server = Custos(
        os.environ["CUSTOS_INTEROP_BASE_URL"], os.environ["CUSTOS_INTEROP_ADMIN_TOKEN"]
    )
    yield server
    server.close()
