"""Fixtures every test module may use: the session's PostgreSQL cluster and a store fixture
parametrised over SQLite and PostgreSQL (:mod:`pg_support`); and which modules run only once.

`make test` runs the suite twice, compiled and with ``GATEWAY_PUREPYTHON=1``, so that every path
through a native module is also taken through its pure twin. The modules in :data:`ONCE` drive
real servers and processes through code that has no compiled twin (the cloud side, the REST API
and page, OPC UA security, discovery and interop): the pure pass skips them, saying why.
"""

import os
from pathlib import Path

import pytest
from pg_support import make_store, pg_cluster

__all__ = ["make_store", "pg_cluster"]

ONCE = frozenset({
    "test_api_auth.py", "test_web.py", "test_web_demo.py", "test_cloud_command.py",
    "test_cloud_pg.py", "test_cloud_service.py", "test_cloud_subscribe.py",
    "test_opcua_driver_security.py", "test_opcua_discover.py", "test_opcua_discover_secure.py",
    "test_opcua_interop.py", "test_sim_opcua.py",
})  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("GATEWAY_PUREPYTHON") != "1":
        return
    skip = pytest.mark.skip(reason="no compiled twin on this path: runs once, in the compiled pass")
    for item in items:
        if Path(str(item.fspath)).name in ONCE:
            item.add_marker(skip)
