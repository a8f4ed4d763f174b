"""House rules: every actor takes **kwargs and states its limits; a breach fails here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import dramatiq
import pytest

import actors
import pipelines
import scheduler.schedule  # noqa: F401  (the schedule must import cleanly too)
from app.house_rules import (
    REQUIRED_ACTOR_OPTIONS,
    HouseRuleViolation,
    fintask_actor,
    house_rule_problems,
)
from app.outbox import ActorRef


def test_every_actor_follows_the_house_rules():
    declared = dramatiq.get_broker().actors
    assert len(declared) >= len(actors.__all__), "no actors were declared"

    problems = {name: house_rule_problems(actor) for name, actor in declared.items()}

    assert {name: p for name, p in problems.items() if p} == {}


def flow_actor_refs() -> dict[str, ActorRef]:
    """Every ``ActorRef`` a flow module of ``pipelines`` defines, by where it is defined."""
    refs = {}
    for info in pkgutil.iter_modules(pipelines.__path__, prefix="pipelines."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, ActorRef):
                refs[f"{info.name}.{name}"] = value
    return refs


def test_every_actor_a_flow_names_is_declared_on_the_queue_the_flow_gives():
    declared = dramatiq.get_broker().actors
    refs = flow_actor_refs()
    assert refs, "no flow names an actor"

    wrong = {
        where: ref
        for where, ref in refs.items()
        if ref.actor_name not in declared or declared[ref.actor_name].queue_name != ref.queue_name
    }

    assert wrong == {}


def test_an_actor_without_kwargs_fails_the_check(stub_broker):
    @dramatiq.actor(queue_name="rules", **{option: 1_000 for option in REQUIRED_ACTOR_OPTIONS})
    def rigid(account_id: int) -> None:
        pass

    try:
        assert house_rule_problems(rigid) == ["does not accept **kwargs"]
    finally:
        del stub_broker.actors["rigid"]


def test_an_actor_relying_on_dramatiq_defaults_fails_the_check(stub_broker):
    @dramatiq.actor(queue_name="rules")
    def lazy(**kwargs: Any) -> None:
        pass

    try:
        assert house_rule_problems(lazy) == [
            f"does not state {option}" for option in REQUIRED_ACTOR_OPTIONS
        ]
    finally:
        del stub_broker.actors["lazy"]


def test_fintask_actor_refuses_a_function_without_kwargs_at_declaration(stub_broker):
    with pytest.raises(HouseRuleViolation, match="actor 'rigid_too' does not accept \\*\\*kwargs"):

        @fintask_actor(
            queue_name="rules",
            time_limit=1_000,
            max_age=1_000,
            max_retries=0,
            min_backoff=100,
            max_backoff=100,
        )
        def rigid_too(account_id: int) -> None:
            pass

    assert "rigid_too" not in stub_broker.actors
