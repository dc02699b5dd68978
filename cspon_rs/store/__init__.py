"""The warning store (SQLAlchemy 2; a SQLite file by default, PostgreSQL/PostGIS by URL).

* :mod:`cspon_rs.store.db` -- ``open_store(url)`` (migrates with the bundled Alembic scripts and returns a
  sessionmaker), ``init_db(url)``, ``make_engine(url)``.
* :mod:`cspon_rs.store.models` -- ``warnings``, ``warning_history``, ``verifications``, ``patches``.
* :mod:`cspon_rs.store.crud` -- ``save_warnings``, ``list_warnings``, ``assign_warning``,
  ``record_verification``, ``change_status``, ``statistics``, ``false_change_negatives`` ...
* :mod:`cspon_rs.store.api_models` / ``api_crud`` -- users, tokens, scenes, jobs, photos (the API's tables).
"""
