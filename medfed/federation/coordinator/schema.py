"""The coordinator's tables (SQLAlchemy Core): what :class:`~.store.Store`
reads and writes. New tables may be added (``create_all`` creates them in an existing
database); a new column in an existing table needs a migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "audit",
    "job_sites",
    "jobs",
    "metadata",
    "nonces",
    "participants",
    "rounds",
    "tasks",
    "uploads",
]

metadata = MetaData()

participants = Table(
    "participants",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("revoked_at", Float),
    Column("revoked_reason", Text),
)

nonces = Table(
    "nonces",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("principal", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False, default=""),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("researcher", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("task_sha256", String(64), nullable=False),
    Column("task_name", String(200), nullable=False),
    Column("config", Text, nullable=False),
    Column("initial_sha256", String(64), nullable=False),
    Column("params_sha256", String(64), nullable=False),
    Column("rounds_done", Integer, nullable=False, default=0),
    Column("error", Text),
)

job_sites = Table(
    "job_sites",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("site", String(64), primary_key=True),
    Column("approval", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# why a site declined a job, in its own words (a reason class, never patient data); a table of
# its own so that databases made before it need no migration
job_site_reasons = Table(
    "job_site_reasons",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("site", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("round", Integer, nullable=False),
    Column("operation", String(16), nullable=False),
    Column("site", String(64), nullable=False, index=True),
    Column("instruction", Text, nullable=False),
    Column("params_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("finished_at", Float),
    Column("reply", Text),
    Column("reply_sha256", String(64)),
    UniqueConstraint("job_id", "round", "operation", "site", name="one_task_per_site"),
)

rounds = Table(
    "rounds",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("params_sha256", String(64), nullable=False),
    Column("summary", Text, nullable=False),
    Column("finished_at", Float, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),  # uploads may exceed 2 GiB (PostgreSQL int4)
    Column("chunk_size", Integer, nullable=False),
    Column("received", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
)
