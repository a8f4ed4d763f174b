"""Every table Alembic manages: fintask's own and those of the libraries it embeds."""

from __future__ import annotations

from sqlalchemy import MetaData

import chunking
from app.db.models import Base

target_metadata: list[MetaData] = [Base.metadata, chunking.metadata]
