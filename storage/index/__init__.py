"""The index: what DeviceVault knows about devices, runs, results and stored versions (SQLAlchemy).

SQLite by default, PostgreSQL through the same code (``DEVICEVAULT_DATABASE_URL``). The schema is managed by
Alembic migrations in ``storage/index/migrations``; :func:`storage.index.db.connect` brings a database to
the newest revision.
"""
