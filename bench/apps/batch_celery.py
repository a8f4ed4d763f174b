"""Celery's side of scenario 10: the chord's no-op member, its callback, a readiness probe.

Run as ``celery -A bench.apps.batch_celery worker``; the app is
:func:`bench.scenarios.batch.celery_batch_app` (Redis as broker and result backend, results
kept for the chord, ``acks_late``, remote control off).
"""

from __future__ import annotations

import os

import redis

from bench.scenarios.batch import celery_batch_app
from bench.systems import REDIS_VARIABLE

client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
app = celery_batch_app(os.environ[REDIS_VARIABLE], client)
