"""Shared memory in a SQL database through SQLModel: SQLite by default, PostgreSQL in production.

``Store(url)`` opens it (creating tables); ``plantcrew.store.tables`` has the schema.
"""

from plantcrew.store import access as _access  # noqa: F401  (registers its tables)
from plantcrew.store.audit import ChainBreak, verify_chain
from plantcrew.store.db import require_existing
from plantcrew.store.store import (
    Store,
    add_model_calls,
    add_outbox,
    load_incident,
    read_incident,
    record_message,
    record_messages,
    record_model_calls,
    save_incident,
)
from plantcrew.store.tables import (
    Action,
    AgentRecord,
    Approval,
    ApprovalVote,
    AuditEntry,
    DeadLetterRecord,
    Incident,
    Lesson,
    MessageRecord,
    ModelCall,
    ModelSpend,
    OutboxEntry,
    Run,
    TaskRecord,
)

__all__ = [
    "Action",
    "AgentRecord",
    "Approval",
    "ApprovalVote",
    "AuditEntry",
    "ChainBreak",
    "DeadLetterRecord",
    "Incident",
    "Lesson",
    "MessageRecord",
    "ModelCall",
    "ModelSpend",
    "OutboxEntry",
    "Run",
    "Store",
    "TaskRecord",
    "add_model_calls",
    "add_outbox",
    "load_incident",
    "read_incident",
    "record_message",
    "record_messages",
    "record_model_calls",
    "require_existing",
    "save_incident",
    "verify_chain",
]
