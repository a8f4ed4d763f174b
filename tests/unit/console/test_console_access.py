"""Who gets into the console and who may act in it (``app.web.console.access``, ``signin``,
``sessions``, ``security``): sessions, roles, CSRF, headers and readable refusals."""

from __future__ import annotations

from sqlalchemy import select

from app.control import tokens
from app.db.models import ApiToken
from app.db.session import transaction
from app.web.console.access import safe_next
from app.web.console.security import CONSOLE_CSP
from app.web.console.sessions import COOKIE
from tests.support.console import console_app, create_token, csrf_of, sign_in, signed_in

#: A console action every role can see but only an operator may take.
ACTION = "/console/sign-out"


def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(database, redis_env):
    client = console_app()
    answer = client.get("/console/workers?state=gone")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/workers%3Fstate%3Dgone"

    form = client.get(answer.headers["location"])
    signed = client.post(
        "/console/sign-in",
        data={
            "token": create_token("viewer"),
            "csrf_token": csrf_of(form.text),
            "next": "/console/workers?state=gone",
        },
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/workers?state=gone"
    assert client.get("/console/workers").status_code == 200


def test_the_session_cookie_is_http_only_strict_and_holds_no_token(database, redis_env):
    client = console_app()
    secret = create_token("operator")
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in", data={"token": secret, "csrf_token": csrf_of(form.text)}
    )
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here: behind TLS the cookie is Secure
    assert secret not in cookie


def test_a_wrong_token_is_refused_with_a_readable_sentence(database, redis_env):
    client = console_app()
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in", data={"token": "ft_not-a-token", "csrf_token": csrf_of(form.text)}
    )
    assert answer.status_code == 401
    assert "that token is not valid: it is unknown or revoked" in answer.text
    assert not any(h.startswith(f"{COOKIE}=") for h in answer.headers.get_list("set-cookie"))


def test_a_sign_in_posted_without_the_forms_own_csrf_value_is_refused(database, redis_env):
    # A page on another site can post this form, but cannot set this site's cookie.
    client = console_app()
    answer = client.post(
        "/console/sign-in", data={"token": create_token("operator"), "csrf_token": "forged"}
    )
    assert answer.status_code == 403
    assert "the form had expired" in answer.text
    assert client.get("/console").status_code == 303


def test_repeated_wrong_tokens_lock_the_address_out_like_the_apis(database, redis_env):
    client = console_app()
    for _ in range(10):
        form = client.get("/console/sign-in")
        client.post("/console/sign-in", data={"token": "wrong", "csrf_token": csrf_of(form.text)})
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"token": create_token("operator"), "csrf_token": csrf_of(form.text)},
    )
    assert answer.status_code == 429
    assert "too many failed attempts" in answer.text


def test_a_form_without_the_sessions_csrf_token_is_refused(database, redis_env):
    client, _ = signed_in("operator")
    answer = client.post(ACTION, data={"csrf_token": "stale"})
    assert answer.status_code == 403
    assert "security token is missing or stale" in answer.text
    assert client.get("/console").status_code == 200  # still signed in: nothing was done


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(database, redis_env):
    client, csrf = signed_in("viewer")
    stolen = client.cookies.get(COOKIE)
    assert client.post(ACTION, data={"csrf_token": csrf}).status_code == 303

    thief = console_app()
    thief.cookies.set(COOKIE, stolen)
    assert thief.get("/console").status_code == 303


def test_revoking_the_token_ends_its_console_sessions(database, redis_env):
    client, _ = signed_in("operator")
    with transaction() as session:
        assert tokens.revoke_token(session, "operator-token")
    answer = client.get("/console/audit")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


def test_signing_in_notes_when_the_token_was_used(database, redis_env):
    signed_in("viewer")
    with transaction() as session:
        used = session.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "viewer-token"))
    assert used is not None


def test_console_pages_carry_a_strict_policy_and_are_never_cached(database, redis_env):
    client, _ = signed_in("viewer")
    answer = client.get("/console")
    assert answer.headers["content-security-policy"] == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    static = client.get("/console/static/console.js")
    assert static.status_code == 200
    assert "cache-control" not in static.headers


def test_an_unknown_console_page_is_a_page_and_the_apis_errors_stay_json(database, redis_env):
    client, _ = signed_in("viewer")
    page = client.get("/console/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "GET /console/no-such-page: not found" in page.text

    api = client.get("/api/no-such-endpoint")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


def test_a_live_region_whose_session_ended_gets_a_401_to_reload_on(database, redis_env):
    client = console_app()
    answer = client.get("/console", headers={"X-Console-Fetch": "1"})
    assert answer.status_code == 401


def test_only_console_paths_are_followed_after_sign_in():
    assert safe_next("/console/queues?state=dead") == "/console/queues?state=dead"
    for elsewhere in ("https://evil.example/", "//evil.example/console", "/api/workers",
                      "/console\\@evil", "/console\r\nSet-Cookie: x", None):  # fmt: skip
        assert safe_next(elsewhere) == "/console"


def test_a_viewer_is_shown_its_role_and_no_token(database, redis_env):
    client = console_app()
    secret = create_token("viewer")
    sign_in(client, secret)
    page = client.get("/console").text
    assert "viewer-token · viewer" in page
    assert secret not in page
