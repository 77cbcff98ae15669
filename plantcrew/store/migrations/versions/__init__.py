"""Revision scripts of plantcrew's schema, applied in order by ``alembic upgrade head``."""
