"""The fan-out benchmark's PostgreSQL: a throwaway cluster, seeded once, counting its queries.

One cluster serves every repetition of a benchmark run: :func:`fanout_database` starts it on
first use and registers its stop with ``atexit`` (the harness calls a scenario once per
repetition, and seeding a million users each time would measure the seeding). The cluster is
:class:`tests.support.postgres.PostgresServer` with ``pg_stat_statements`` preloaded, so
"database queries" is the sum of ``calls`` of every statement run in the benchmark
database (``track_utility`` off: BEGIN and COMMIT are not queries).
"""

from __future__ import annotations

import atexit

import psycopg
from sqlalchemy import create_engine, text

import chunking
from bench.apps.fanout_users import SEED_SQL, FanoutBase, rows_for
from tests.support.postgres import PostgresServer

DATABASE = "fanout"

_QUERIES_SQL = """
SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""


def statement_counting_postgres() -> PostgresServer:
    """A throwaway cluster with ``pg_stat_statements`` loaded and its extension created."""
    server = PostgresServer(
        settings={
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track_utility": "off",
        }
    ).start()
    try:
        with psycopg.connect(server.admin_dsn, autocommit=True) as connection:
            connection.execute("CREATE EXTENSION pg_stat_statements")
    except BaseException:
        server.stop()
        raise
    return server


class FanoutDatabase:
    """The benchmark database: its URL, its seeding, and its query counter."""

    def __init__(self) -> None:
        self.server = statement_counting_postgres()
        try:
            self.url = self.server.create_database(DATABASE)
            engine = create_engine(self.url)
            FanoutBase.metadata.create_all(engine)
            chunking.metadata.create_all(engine)
            engine.dispose()
            self.seeded_rows = 0
            self._counter = psycopg.connect(self.server.admin_dsn, autocommit=True)
        except BaseException:
            self.server.stop()
            raise

    def seed(self, users: int) -> None:
        """Make sure the first ``users`` active users exist (re-seeding only for a larger case)."""
        rows = rows_for(users)
        if rows <= self.seeded_rows:
            return
        engine = create_engine(self.url)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE bench_users"))
            connection.exec_driver_sql(SEED_SQL, {"rows": rows})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE bench_users"))
        engine.dispose()
        self.seeded_rows = rows

    def queries(self) -> int:
        """How many statements the benchmark database has run so far."""
        row = self._counter.execute(_QUERIES_SQL, (DATABASE,)).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        """Close the counter's connection and remove the cluster."""
        self._counter.close()
        self.server.stop()


_database: FanoutDatabase | None = None


def fanout_database() -> FanoutDatabase:
    """The benchmark run's database, started on first use and stopped when Python exits."""
    global _database
    if _database is None:
        _database = FanoutDatabase()
        atexit.register(_database.stop)
    return _database
