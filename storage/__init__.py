"""Persistence for Apprentice: SQLAlchemy 2.x ORM, Alembic migrations, keyword-only repository functions.

Imports nothing from `learner/` or `app/`. Every write goes through a function in this package, inside
`db.transaction(...)`; nothing outside it issues SQL.
"""
