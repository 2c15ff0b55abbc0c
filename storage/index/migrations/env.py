"""Alembic environment of the index. Run through storage.index.db.upgrade(url), or
``alembic -x url=sqlite:///var/index.sqlite -c storage/index/alembic.ini upgrade head``."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from storage.index.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(  # connect_args: storage.index.db.upgrade's wait for a locked SQLite file
        {"sqlalchemy.url": _url()}, prefix="sqlalchemy.", poolclass=pool.NullPool,
        connect_args=config.attributes.get("connect_args", {}),
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
