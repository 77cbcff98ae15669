"""The database connection: engines, transactions and SQLite's production settings.

``sqlite:///path`` (the default) runs in WAL mode with a busy timeout, and every transaction
starts with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
``postgresql://...`` uses psycopg 3 (``datetime`` columns are SQLModel's ``UTCDateTime``:
``timestamptz`` there, aware UTC when read on both databases). The schema is migrated to
the newest revision when a ``Database`` is opened (Alembic; see ``plantcrew.store.migrations``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, create_engine

from plantcrew.errors import NotFoundError, StoreError, StoreUnavailable
from plantcrew.settings import redacted_url
from plantcrew.store import tables  # noqa: F401  (registers the tables)
from plantcrew.store.deferred import DEFERRED, Deferred

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 10
"""libpq's ``connect_timeout`` unless the URL sets one: a server that accepts the TCP
connection but never answers fails the connect after this long instead of hanging."""
# libpq TCP keepalives (seconds): a connection whose server vanished (host down, cable cut)
# is found dead in about idle + interval * count instead of the kernel's ~2 h default
_PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                  "keepalives_count": 3}  # fmt: skip
# SQLite primary result codes (https://sqlite.org/rescode.html) meaning "not now"
_SQLITE_UNAVAILABLE = {5: "busy", 6: "busy", 10: "unreachable", 14: "unreachable"}
# PostgreSQL SQLSTATEs of a server that went away or will not take connections now
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "53300")


def normalise_url(url: str) -> str:
    """Map user-facing URLs to SQLAlchemy's: ``postgresql://`` → ``postgresql+psycopg://``."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+")):
        return url
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names (relative to the working folder, as SQLite
    opens it), or None for another database, an in-memory one or a ``file:`` URI."""
    if not url.startswith("sqlite:"):
        return None
    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def require_existing(url: str) -> None:
    """Raise NotFoundError when ``url`` names a SQLite file that does not exist, so that a
    command which only reads a store refuses a mistyped path instead of creating an empty
    database there. Any other URL passes (a server says itself whether it has the database).
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotFoundError(f"no database at {path} ({url}): check --db or PLANTCREW_DB_URL")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with plantcrew's settings (see module doc)."""
    sa_url = normalise_url(url)
    if sa_url.startswith("sqlite"):
        engine = create_engine(
            sa_url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    given = make_url(sa_url).query
    connect_args: dict[str, Any] = {k: v for k, v in _PG_KEEPALIVES.items() if k not in given}
    if "connect_timeout" not in given:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return create_engine(sa_url, pool_pre_ping=True, connect_args=connect_args)


def unavailable_cause(exc: SQLAlchemyError) -> str | None:
    """``"unreachable"`` or ``"busy"`` when ``exc`` says the database cannot serve now (so a
    retry later may work), else None (a bad statement, a constraint, a bug).

    Unreachable: the connection was lost (SQLAlchemy invalidated it), could not be opened
    (a driver error with no SQLSTATE: refused, timed out, name not resolved), PostgreSQL
    shutting down or refusing connections (class 08, 57P01-57P03, 53300 too many
    connections), SQLite unable to open or read its file. Busy: SQLite still locked after
    the busy timeout, or no pooled connection free within the pool's timeout.
    """
    if isinstance(exc, PoolTimeout):
        return "busy"
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "unreachable"
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE_UNAVAILABLE.get(code & 0xFF)
    if type(orig).__module__.startswith("psycopg"):
        state = getattr(orig, "sqlstate", None)
        if state is None:
            return "unreachable" if isinstance(exc, OperationalError) else None
        if state.startswith(_PG_UNAVAILABLE):
            return "unreachable"
    return None


class Database:
    """An engine plus transactions. ``with db.tx() as s:`` commits on success, rolls back on
    error, and turns driver errors into StoreError (StoreUnavailable when the database cannot
    serve now: see :func:`unavailable_cause`).

    ``create`` (default): migrate the schema to the newest revision first (``alembic upgrade
    head``, safe when several processes start at once). Raises StoreError when the database
    cannot be reached or migrated. ``existing``: the database must be there already; a SQLite
    file that does not exist raises NotFoundError naming it, and is not created
    (:func:`require_existing`).
    """

    def __init__(self, url: str, *, create: bool = True, existing: bool = False) -> None:
        if existing:
            require_existing(url)
        self.url = url
        self.engine = make_engine(url)
        if create:
            from plantcrew.store.migrations import upgrade_to_head

            try:
                upgrade_to_head(self.engine)
            except OperationalError as exc:
                self.engine.dispose()
                raise StoreError(f"cannot open database {redacted_url(url)}: {exc.orig}") from exc
            except SQLAlchemyError as exc:
                self.engine.dispose()
                raise StoreError(f"cannot migrate database {redacted_url(url)}: {exc}") from exc
            except StoreError as exc:
                self.engine.dispose()
                raise StoreError(f"cannot open database {redacted_url(url)}: {exc}") from exc

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction (BEGIN IMMEDIATE on SQLite). Writes deferred to its end
        (:mod:`plantcrew.store.deferred`) are made just before it commits, and what waits
        for the commit (``Deferred.committed``) runs right after it."""
        session = Session(self.engine, expire_on_commit=False)
        work = session.info[DEFERRED] = Deferred()
        try:
            with session.begin():
                yield session
                work.before_commit(session)
            for done in work.committed:
                done()
        except SQLAlchemyError as exc:
            cause = unavailable_cause(exc)
            if cause is not None:
                raise StoreUnavailable(cause, f"database {cause}: {exc}") from exc
            raise StoreError(f"database error: {exc}") from exc
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
