"""Alembic environment: runs on the connection handed over by ``lib.reviews.db.migrate``.

Standalone use (``alembic -x url=...``) is supported for a server administrator who wants to inspect or
upgrade a database by hand.
"""

from alembic import context
from sqlalchemy import create_engine

from lib.reviews.models import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from lib.reviews.db import normalise_url

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(normalise_url(url)).begin() as conn:
        _run(conn)
