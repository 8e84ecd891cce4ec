"""Alembic environment: migrations run on a connection the service hands over.

``app.db.migrate`` passes an open connection and the embedding dimension in
``config.attributes``; nothing here reads URLs or settings itself.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from app.db import models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
