"""The Celery task names the bridge hands to fintask actors (``fintask bridge celery``).

While a team moves off Celery, its producers keep publishing tasks by name (``.delay()``,
``apply_async``, ``send_task``); the bridge looks each name up here and enqueues the message
for the actor, with the same arguments. A name missing here is dead-lettered with the reason,
so adding a task is one line, and a call site moved to ``actor.send`` makes its line unneeded.
Each actor must take the task's arguments as Celery sends them (JSON: ids, not objects).

The bridge's refusals are dead letters of the ``celery_bridge`` queue, declared here so that
every process that lists the queues (``fintask dlq``, the console) shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dramatiq import Actor

from actors import fraud, insights, maintenance
from app.celery_protocol import BRIDGE_QUEUE
from app.declarations import declare_queue

declare_queue(BRIDGE_QUEUE)

#: Celery task name -> the fintask actor that now runs it.
CELERY_TASKS: Mapping[str, Actor[Any, Any]] = {
    "accounts.tasks.check_new_account": fraud.check_new_account,
    "insights.tasks.recalculate": insights.recalculate_insights,
    "maintenance.tasks.ping": maintenance.ping,
}
