"""The control plane's audit trail, API tokens, bearer access and problem-details errors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from http import HTTPStatus

import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI, Path
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from app.cli.main import main
from app.control import audit, tokens
from app.cursors import InvalidCursor
from app.db.models import ApiToken, AuditEvent
from app.db.session import reset_default_engine, transaction
from app.local.ports import free_port
from app.redis_client import get_redis
from app.web.auth import AUTH_RESPONSES, FAILURE_WINDOW_S, MAX_FAILURES, Operator, Viewer
from app.web.errors import install_error_handlers


def fintask(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def make_token(name: str, role: str) -> str:
    with transaction() as session:
        token, _ = tokens.create_token(session, name=name, role=role)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(status: int, detail: str) -> dict[str, object]:
    title = HTTPStatus(status).phrase
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


@pytest.fixture
def api(database: Engine, redis_env: str) -> TestClient:
    """An app with one endpoint per role behind the dependencies, answering as the API does."""
    app = FastAPI()

    @app.get("/view/{item}", responses=AUTH_RESPONSES)
    def view(caller: Viewer, item: int = Path(ge=1)) -> dict[str, str]:
        return {"who": caller.who, "role": caller.role}

    @app.post("/act", responses=AUTH_RESPONSES)
    def act(caller: Operator) -> dict[str, str]:
        return {"who": caller.who}

    install_error_handlers(app)
    return TestClient(app, raise_server_exceptions=False)


# --- Tokens --------------------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_as_its_hash_and_authenticates(database):
    token = make_token("grafana", "viewer")

    assert token.startswith("ft_") and len(token) > 40
    with transaction() as session:
        (row,) = session.scalars(select(ApiToken)).all()
        assert row.token_hash != token and len(row.token_hash) == 64
        assert token not in json.dumps(tokens.as_dict(row))
        found = tokens.authenticate(session, token)
        assert found is not None and (found.name, found.role) == ("grafana", "viewer")
        assert found.last_used_at is not None
        assert tokens.authenticate(session, token + "x") is None


def test_last_used_is_written_at_most_once_a_minute(database):
    token = make_token("ci", "operator")
    with transaction() as session:
        first = tokens.authenticate(session, token)
        assert first is not None
        used_at = first.last_used_at
    with transaction() as session:
        again = tokens.authenticate(session, token)
        assert again is not None and again.last_used_at == used_at
        assert used_at is not None
        again.last_used_at = used_at - dt.timedelta(minutes=2)
    with transaction() as session:
        later = tokens.authenticate(session, token)
        assert later is not None and later.last_used_at is not None
        assert later.last_used_at > used_at


def test_a_revoked_token_no_longer_authenticates(database):
    token = make_token("old", "operator")
    with transaction() as session:
        assert tokens.revoke_token(session, "old") is True
    with transaction() as session:
        assert tokens.authenticate(session, token) is None
        assert tokens.revoke_token(session, "old") is False
        assert tokens.revoke_token(session, "never") is False


@pytest.mark.parametrize(
    ("name", "role", "words"),
    [
        ("x", "admin", "'admin' is not a role (viewer, operator)"),
        ("taken", "viewer", "a token named 'taken' exists already"),
        (" ", "viewer", "1 to 100 characters"),
        ("n" * 101, "viewer", "1 to 100 characters"),
    ],
)
def test_an_unknown_role_or_a_taken_name_is_refused_readably(database, name, role, words):
    make_token("taken", "operator")

    with transaction() as session, pytest.raises(ValueError, match=re.escape(words)):
        tokens.create_token(session, name=name, role=role)


def test_an_operator_can_do_what_a_viewer_can_and_not_the_reverse():
    assert tokens.can("operator", "viewer") and tokens.can("operator", "operator")
    assert tokens.can("viewer", "viewer") and not tokens.can("viewer", "operator")
    assert not tokens.can("stranger", "viewer")


# --- The audit trail -----------------------------------------------------------------------------


def test_audit_pages_run_newest_first_through_their_cursors(database):
    with transaction() as session:
        for n in range(5):
            audit.record(session, who="cli:ada@box", action="queue.pause", target=f"q{n}", count=n)
        audit.record(session, who="token:ci", action="token.create", target="ci")

    pages, cursor = [], None
    with transaction() as session:
        while True:
            events, cursor = audit.list_events(
                session, cursor=cursor, limit=2, action="queue.pause"
            )
            pages.append([event.target for event in events])
            if cursor is None:
                break
        (everything, end) = audit.list_events(session, cursor=None)
        first = audit.as_dict(everything[0])

    assert pages == [["q4", "q3"], ["q2", "q1"], ["q0"]]
    assert end is None and len(everything) == 6
    assert first["action"] == "token.create" and first["at"].endswith("Z")
    assert (first["count"], first["detail"]) == (0, None)


def test_a_detail_and_an_overlong_target_are_kept(database):
    with transaction() as session:
        audit.record(
            session, who="token:ci", action="message.cancel", target="m" * 600, detail={"n": [1]}
        )
    with transaction() as session:
        (event,) = session.scalars(select(AuditEvent)).all()
        assert (len(event.target), event.target[-1], event.detail) == (500, "…", {"n": [1]})


@pytest.mark.parametrize("cursor", ["", "not a cursor!", "YWJj", "MA", "LTE", "9" * 40, "é"])
def test_a_malformed_cursor_is_an_invalid_cursor_that_says_so(database, cursor):
    with (
        transaction() as session,
        pytest.raises(InvalidCursor, match="not one this list handed out"),
    ):
        audit.list_events(session, cursor=cursor)


# --- The HTTP API: bearer tokens, roles, the guessing limit, problem details ----------------------


def test_a_viewer_token_reads_and_an_operator_token_acts(api):
    viewer, operator = make_token("grafana", "viewer"), make_token("ci", "operator")

    assert api.get("/view/1", headers=bearer(viewer)).json() == {
        "who": "token:grafana",
        "role": "viewer",
    }
    assert api.get("/view/1", headers=bearer(operator)).status_code == 200
    assert api.post("/act", headers=bearer(operator)).json() == {"who": "token:ci"}

    refused = api.post("/act", headers=bearer(viewer))
    assert refused.status_code == 403
    assert refused.json() == problem(
        403, "the token 'grafana' has the role viewer; this needs operator"
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YTpi"}, {"Cookie": "token=x"}, {"Authorization": "Bearer"}],
)
def test_no_bearer_token_is_a_401_asking_for_one(api, headers):
    make_token("ci", "operator")

    response = api.post("/act", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json() == problem(
        401, "this needs an API token: send the header `Authorization: Bearer <token>`"
    )


def test_a_token_in_the_query_string_is_not_read(api):
    token = make_token("ci", "operator")

    assert api.post(f"/act?token={token}&access_token={token}").status_code == 401


def test_an_unknown_or_revoked_token_is_a_401(api):
    token = make_token("old", "operator")
    with transaction() as session:
        tokens.revoke_token(session, "old")

    for attempt in (token, "ft_guess"):
        response = api.post("/act", headers=bearer(attempt))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert response.json()["detail"] == "the API token is not valid: it is unknown or revoked"


def test_the_eleventh_failed_attempt_is_a_429_even_with_a_valid_token(api, client):
    token = make_token("ci", "operator")

    statuses = [api.post("/act", headers=bearer(f"ft_guess{n}")).status_code for n in range(10)]
    locked = api.post("/act", headers=bearer(token))

    assert statuses == [401] * MAX_FAILURES
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= FAILURE_WINDOW_S
    assert locked.json()["detail"].startswith("too many failed attempts from testclient;")
    assert 0 < client.ttl("fintask:auth:failures:testclient") <= FAILURE_WINDOW_S

    client.delete("fintask:auth:failures:testclient")  # the window ends
    assert api.post("/act", headers=bearer(token)).status_code == 200


def test_an_unreachable_redis_skips_the_limit_with_a_warning(api, monkeypatch, caplog):
    token = make_token("ci", "operator")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_redis.cache_clear()

    with caplog.at_level(logging.WARNING, logger="app.web.auth"):
        statuses = [api.post("/act", headers=bearer("ft_guess")).status_code for _ in range(12)]
        allowed = api.post("/act", headers=bearer(token))

    assert statuses == [401] * 12
    assert allowed.status_code == 200
    assert "guessing limit is skipped: Redis is unavailable" in caplog.text


def test_every_error_is_problem_details(api):
    token = make_token("grafana", "viewer")

    missing = api.get("/nowhere")
    invalid = api.get("/view/zero", headers=bearer(token))
    too_small = api.get("/view/0", headers=bearer(token))

    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json() == problem(404, "GET /nowhere: not found")
    assert invalid.status_code == 422
    body = invalid.json()
    assert {key: body[key] for key in ("type", "title", "status")} == {
        "type": "about:blank",
        "title": HTTPStatus(422).phrase,
        "status": 422,
    }
    assert body["detail"] == (
        "the request is not valid: path parameter item: "
        "Input should be a valid integer, unable to parse string as an integer"
    )
    assert body["errors"] == [
        {"loc": ["path", "item"], "msg": body["errors"][0]["msg"], "type": "int_parsing"}
    ]
    assert "zero" not in json.dumps(body["errors"])  # the value sent is not echoed
    assert "greater than or equal to 1" in too_small.json()["detail"]


def test_the_openapi_schema_documents_the_bearer_scheme_and_the_problem_shape(api):
    schema = api.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"401", "403", "429"} <= set(schema["paths"]["/act"]["post"]["responses"])
    error = schema["components"]["schemas"]["ErrorOut"]
    assert set(error["required"]) == {"title", "status", "detail"}
    assert set(error["properties"]) == {"type", "title", "status", "detail"}


# --- The CLI -------------------------------------------------------------------------------------


def test_tokens_create_list_revoke_and_the_audit_of_it(database):
    created = fintask("tokens", "create", "--name", "ci", "--role", "operator")
    listed = fintask("tokens", "list", "--json")
    table = fintask("tokens", "list")
    revoked = fintask("tokens", "revoke", "ci")
    again = fintask("tokens", "revoke", "ci")
    duplicate = fintask("tokens", "create", "--name", "ci", "--role", "viewer")
    trail = fintask("audit", "--json")

    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("ft_") and "not shown again" in created.stderr
    with transaction() as session:
        (row,) = session.scalars(select(ApiToken)).all()
        assert row.token_hash not in listed.output + table.output
    assert [t["name"] for t in json.loads(listed.output)["items"]] == ["ci"]
    assert "token_hash" not in json.loads(listed.output)["items"][0]
    assert table.output.split()[:5] == ["NAME", "ROLE", "CREATED", "LAST", "USED"]
    assert (revoked.exit_code, revoked.output) == (0, "revoked 'ci'\n")
    assert again.exit_code == 1
    assert "no live token named 'ci'" in again.output
    assert duplicate.exit_code == 2 and "a token named 'ci' exists already" in duplicate.output
    assert trail.exit_code == 0, trail.output
    events = json.loads(trail.output)
    assert [(e["action"], e["target"]) for e in events["items"]] == [
        ("token.revoke", "ci"),
        ("token.create", "ci"),
    ]
    assert events["items"][1]["detail"] == {"role": "operator"}
    assert events["items"][0]["who"].startswith("cli:") and "@" in events["items"][0]["who"]
    assert events["next_cursor"] is None


def test_audit_prints_a_table_with_the_next_page_and_refuses_a_bad_cursor(database):
    with transaction() as session:
        for n in range(3):
            audit.record(session, who="cli:ada@box", action="queue.purge", target=f"q{n}", count=n)

    first = fintask("audit", "--limit", "2", "--action", "queue.purge")
    cursor = first.output.splitlines()[-1].split("--cursor ")[1].split()[0]
    second = fintask("audit", "--limit", "2", "--cursor", cursor, "--json")
    bad = fintask("audit", "--cursor", "nope")

    assert first.exit_code == 0, first.output
    assert first.output.split()[:6] == ["ID", "AT", "WHO", "ACTION", "TARGET", "COUNT"]
    assert first.output.splitlines()[-1].endswith("--action queue.purge")
    assert [e["target"] for e in json.loads(second.output)["items"]] == ["q0"]
    assert bad.exit_code == 2 and "the cursor is not one this list handed out" in bad.output


@pytest.mark.parametrize("command", [("tokens", "list"), ("audit",)])
def test_a_database_not_migrated_is_one_line_saying_to_migrate(database_url, monkeypatch, command):
    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_default_engine()

    result = fintask(*command)
    reset_default_engine()

    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: the database is not migrated (")
    assert line.endswith("run `fintask migrate`")


def test_an_unreachable_database_is_one_line(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://fintask@127.0.0.1:{free_port()}/x")
    reset_default_engine()

    result = fintask("tokens", "revoke", "ci")
    reset_default_engine()

    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: the database is unavailable (OperationalError: ")
