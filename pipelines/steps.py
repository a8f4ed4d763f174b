"""How a step of a job waits, retries and gives up: the same way for every step.

- ``Deferred`` (and the provider's 429, ``ProviderRateLimited``): the current message is sent
  again after the provider's ``Retry-After``, with the same id and options, so no retry is
  spent and a pipeline's later steps (``pipe_target``) travel with it. The delivery that was
  deferred ends with ``SkipMessage``, which acknowledges it without starting the next step.
  A step past its soft time limit defers itself the same way, at once, with what it has done
  so far in ``Deferred.kwargs`` (the download's partial blob).
- A permanent failure (a 4xx other than 429, a missing row, data that does not parse): the job
  fails now, naming the step and the cause, and ``StepAbandoned`` ends the message without
  retries (actors list it in ``throws``). The pipeline stops: no later step is sent.
- Anything else (5xx, timeouts, a lost database): Dramatiq's ``Retries`` retries the message
  with exponential backoff and jitter; on the last attempt the job is failed first, so a
  message that dead-letters never leaves its job ``running``.

Dramatiq's ``on_failure`` / ``on_retry_exhausted`` callbacks cannot do this here: they send
the whole failed message (a dict) as an argument, which the guardrails reject, and
``on_failure`` fires on every failed attempt, not only the last.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, SkipMessage, TimeLimitExceeded

from app.db.session import SessionFactory, new_session
from app.middleware import defer_message
from app.provider import ProviderError, ProviderRateLimited
from pipelines import jobs

logger = logging.getLogger(__name__)

#: The share of the provider's request quota each provider-calling actor may use, across every
#: worker process (a global Redis limit): downloads and polls each get half of ~10 requests/s.
PROVIDER_RATE_LIMIT = "5/s"

#: The message option counting how often a message was deferred (a 429, a soft time limit).
DEFERRALS_OPTION = "retry_after_deferrals"
#: A provider still refusing after this many deferrals has a problem waiting will not fix.
MAX_DEFERRALS = 30

#: Failures that fail the same way however often they are retried.
PERMANENT_FAILURES: tuple[type[Exception], ...] = (ProviderError, LookupError, ValueError)


class StepAbandoned(Exception):
    """A step failed for good and its job records why; retrying will not help."""


class Deferred(Exception):
    """Run this message again in ``delay_ms`` with ``kwargs`` merged into its arguments."""

    def __init__(self, delay_ms: int, *, reason: str, kwargs: dict[str, Any] | None = None):
        super().__init__(f"deferred by {delay_ms} ms: {reason}")
        self.delay_ms = delay_ms
        self.kwargs = kwargs or {}


@dataclass(frozen=True)
class Attempt:
    number: int
    final: bool


def current_attempt() -> Attempt:
    """Which delivery of the current message this is, and whether a failure now is the last.

    Outside a worker (a flow called directly) there is no retry, so every attempt is final.
    """
    message = CurrentMessage.get_current_message()
    if message is None:
        return Attempt(number=1, final=True)
    actor = dramatiq.get_broker().get_actor(message.actor_name)
    retries = int(message.options.get("retries") or 0)
    max_retries = message.options.get("max_retries", actor.options.get("max_retries"))
    return Attempt(number=retries + 1, final=max_retries is not None and retries >= max_retries)


@contextmanager
def job_step(
    job_id: str, step: str, *, new_session: SessionFactory = new_session
) -> Iterator[None]:
    """Run a step of ``job_id`` under the rules above; ``step`` names it in the job's error."""
    try:
        yield
    except ProviderRateLimited as error:
        deferred = Deferred(error.retry_after_ms, reason=str(error))
        _defer_or_fail(job_id, step, deferred, error, new_session=new_session)
        raise
    except Deferred as deferred:
        _defer_or_fail(job_id, step, deferred, deferred, new_session=new_session)
        raise
    except PERMANENT_FAILURES as error:
        jobs.fail(job_id, f"{step}: {describe(error)}", new_session=new_session)
        raise StepAbandoned(f"job {job_id}: {step} failed: {describe(error)}") from error
    except (Exception, TimeLimitExceeded) as error:
        attempt = current_attempt()
        if attempt.final:
            reason = f"{step}: gave up after {attempt.number} attempt(s): {describe(error)}"
            jobs.fail(job_id, reason, new_session=new_session)
        raise


def _defer_or_fail(
    job_id: str,
    step: str,
    deferred: Deferred,
    error: Exception,
    *,
    new_session: SessionFactory,
) -> None:
    """Re-send the current message (raising ``SkipMessage``); return only if there is none."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return
    count = int(message.options.get(DEFERRALS_OPTION) or 0) + 1
    if count > MAX_DEFERRALS:
        reason = f"{step}: still refused after {MAX_DEFERRALS} deferrals: {describe(error)}"
        jobs.fail(job_id, reason, new_session=new_session)
        raise StepAbandoned(f"job {job_id}: {reason}") from error
    # The delay is at least 1 ms: it must go to the delayed queue, because acknowledging this
    # delivery deletes the body of a message with the same id from the ready queue's hash.
    defer_message(
        dramatiq.get_broker(),
        message,
        delay_ms=max(1, deferred.delay_ms),
        count_option=DEFERRALS_OPTION,
        kwargs=deferred.kwargs,
    )
    logger.info("Job %s: %s deferred by %d ms (%s)", job_id, step, deferred.delay_ms, error)
    raise SkipMessage(str(deferred)) from error


def describe(error: BaseException) -> str:
    """``"Type: message"``, the way a job's error names its cause."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
