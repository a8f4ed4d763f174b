"""Importing fintask configures nothing: each process's entry point builds its broker."""

from __future__ import annotations

import subprocess
import sys

from app.cli.main import COMMANDS, main
from app.settings import PROJECT_ROOT


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, as a new process would start."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )


def test_importing_the_actors_builds_no_broker_and_sending_early_says_why():
    result = run_python(
        "import dramatiq.broker, actors\n"
        "assert dramatiq.broker.global_broker is None, 'a broker was built by the import'\n"
        "actors.notifications.deliver_email.send(notification_id=1)\n"
    )

    assert result.returncode == 1
    assert "BrokerNotBuilt: cannot send 'deliver_email'" in result.stderr
    assert "app.broker.setup_broker()" in result.stderr


def test_the_broker_built_after_the_import_takes_every_actor_over():
    result = run_python(
        "import actors\n"
        "from app.broker import setup_broker\n"
        "broker = setup_broker()\n"
        "print(broker.get_actor('deliver_email').queue_name)\n"
        "print(broker.get_actor('send_email').queue_name)\n"
        "print(actors.notifications.deliver_email.broker is broker)\n",
        BROKER_URL="stub://",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["emails", "emails", "True"]


def test_help_lists_every_command_without_importing_any_of_them():
    result = run_python(
        "import sys\n"
        "from app.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('actors', 'pipelines', 'sqlalchemy', 'fastapi')\n"
        "print('imported:', [m for m in heavy if m in sys.modules])\n"
    )

    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
    for name in COMMANDS:
        assert f"  {name} " in result.stdout


def test_each_listed_summary_is_the_commands_own_first_line():
    for name in COMMANDS:
        command = main.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None
        assert COMMANDS[name][1] == command.get_short_help_str(limit=1_000), name


def test_an_option_no_middleware_reads_stops_the_process_at_its_broker():
    result = run_python(
        "from app.house_rules import fintask_actor\n"
        "limits = dict(time_limit=1000, max_age=1000, max_retries=0, min_backoff=1000,\n"
        "              max_backoff=1000)\n"
        "@fintask_actor(queue_name='q', rate_limt='5/s', **limits)\n"
        "def misspelt(**kwargs): pass\n"
        "from app.broker import setup_broker\n"
        "setup_broker()\n",
        BROKER_URL="stub://",
    )

    assert result.returncode == 1
    assert "actor 'misspelt': no middleware of the broker reads rate_limt" in result.stderr
