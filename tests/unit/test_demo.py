"""The demo's summary ends with where the console answers and a token that signs in to it
(``app.local.showcases.console``)."""

from __future__ import annotations

from pathlib import Path

from app.local import showcases
from app.local.showcases import DemoContext, DemoSummary
from app.local.stack import LocalStack
from tests.support.console import console_app, sign_in


def test_the_summary_names_the_console_and_an_operator_token_that_signs_in(
    database, redis_env, tmp_path: Path
):
    # Given the demo's stack, its web process on port 8123 (not started: the step only reads
    # where it answers, and writes to the database and Redis the web process would use)
    stack = LocalStack(var_dir=tmp_path, process_types=["web"])
    stack.env = {"WEB_PORT": "8123"}
    summary = DemoSummary()

    # When the console's showcase step runs
    showcases.console(DemoContext(stack=stack, users=1, log=print, summary=summary))

    # Then the summary names the console's URL and a token, which signs in as an operator
    section = summary.as_dict()["console"]
    assert section["url"] == "http://127.0.0.1:8123/console"
    client = console_app()
    sign_in(client, section["operator_token"])
    assert "demo-operator · operator" in client.get("/console").text
    assert section["operator_token"] in summary.render()
