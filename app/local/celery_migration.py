"""The demo's migration showcase: a Celery producer's tasks run on fintask's workers.

A Celery 5.7 app of the shop fintask replaces publishes as it always did (``delay``,
``apply_async(countdown=...)``, ``send_task``) to the demo's Redis; the Procfile's
``bridge_celery`` process hands each task to the fintask actor mapped to its name
(``actors.from_celery``), and refuses what it must not run: a pickled task, and a task name
nothing is mapped to, both dead letters of the ``celery_bridge`` queue.
"""

from __future__ import annotations

import os

from celery import Celery
from sqlalchemy import select

from app.celery_protocol import BRIDGE_QUEUE
from app.db.models import FraudCheck, ProviderAccount
from app.db.session import transaction
from app.inspection import dead_letter_counts
from app.local.showcases import DemoContext, wait_for
from app.redis_client import get_redis

#: The Celery name of the task the shop's producer still sends (``actors.from_celery``).
CHECK_NEW_ACCOUNT = "accounts.tasks.check_new_account"


def shop_producer(broker_url: str) -> Celery:
    """The shop's Celery app as its producers use it: tasks published by name, run elsewhere."""
    app = Celery("shop", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False

    @app.task(name=CHECK_NEW_ACCOUNT)
    def check_new_account(account_id: int) -> None:
        raise RuntimeError("fintask runs this task now, through the bridge")

    return app


def celery_migration(context: DemoContext) -> None:
    """migration: a Celery producer's tasks run on fintask workers through the bridge"""

    with transaction() as session:
        unchecked = select(ProviderAccount.id).where(
            ~ProviderAccount.id.in_(select(FraudCheck.account_id))
        )
        ids = list(session.scalars(unchecked.order_by(ProviderAccount.id).limit(5)))
    producer = shop_producer(os.environ["REDIS_URL"])
    task = producer.tasks[CHECK_NEW_ACCOUNT]
    for account_id in ids[:3]:
        task.delay(account_id)
    task.apply_async(args=[ids[3]], countdown=1)
    producer.send_task(CHECK_NEW_ACCOUNT, args=[ids[4]])
    task.apply_async(args=[ids[0]], serializer="pickle")
    producer.send_task("billing.tasks.charge_card", args=[ids[0]])

    def checked() -> int:
        with transaction() as session:
            query = select(FraudCheck.account_id).where(FraudCheck.account_id.in_(ids))
            return len(list(session.scalars(query)))

    def dead() -> int:
        return dead_letter_counts(get_redis(), [BRIDGE_QUEUE])[BRIDGE_QUEUE]

    took = wait_for(lambda: checked() == len(ids) and dead() == 2, what="the bridged tasks")
    context.summary.add(
        "celery bridge",
        published_by_celery=f"{len(ids) + 2} (delay, apply_async countdown, send_task)",
        ran_on_fintask=f"{checked()} fraud checks (accounts.tasks.check_new_account)",
        dead_lettered=f"{dead()} (a pickled task, an unmapped name): fintask dlq list",
        all_done_in_s=took,
    )
