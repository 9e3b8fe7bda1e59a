"""Fixtures every test module may use: the session's PostgreSQL cluster and a store fixture
parametrised over SQLite and PostgreSQL (:mod:`pg_support`)."""

from pg_support import make_store, pg_cluster

__all__ = ["make_store", "pg_cluster"]
