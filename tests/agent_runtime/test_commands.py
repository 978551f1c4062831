"""Every management command of the project explains itself; django-q2's monitors run."""

from __future__ import annotations

import argparse
import os
from io import StringIO

import pytest
from django.core.management import call_command, get_commands, load_command_class

from tests.e2e.server import manage, migrate
from tests.services import require_redis

OUR_APPS = ("agent_runtime", "sessions", "agents", "approvals")
OURS = sorted((name, app) for name, app in get_commands().items() if app in OUR_APPS)
# Options every Django command has; the project's own options are checked for a help text.
STOCK = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def test_the_project_has_the_maintenance_commands():
    names = {name for name, _ in OURS}
    assert {"export_session", "runtime_stats", "purge_sessions", "expire_approvals"} <= names


@pytest.mark.parametrize(("name", "app"), OURS, ids=[name for name, _ in OURS])
def test_each_command_has_a_one_line_summary_and_documented_options(name, app):
    command = load_command_class(app, name)
    summary = str(command.help)
    assert summary and "\n" not in summary.strip() and len(summary) <= 100, summary
    parser = command.create_parser("manage.py", name)
    text = " ".join(parser.format_help().split())
    assert text.startswith(f"usage: manage.py {name}")
    assert " ".join(summary.split()) in text
    for action in parser._actions:
        if action.dest not in STOCK and not isinstance(action, argparse._HelpAction):
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_help_works_from_the_command_line():
    done = manage("export_session", "--help")
    assert done.returncode == 0, done.stderr
    assert "Export one session as a readable Markdown transcript" in done.stdout
    assert "--format {markdown,json}" in done.stdout


def test_the_destructive_commands_are_dry_runs_unless_for_real():
    for name in ("purge_sessions", "expire_approvals"):
        parser = load_command_class(get_commands()[name], name).create_parser("manage.py", name)
        assert parser.parse_args([]).for_real is False
        assert parser.parse_args(["--for-real"]).for_real is True
        assert "dry run" in parser.format_help()


@pytest.mark.django_db
def test_qinfo_reports_on_the_task_queue(capsys):
    call_command("qinfo")  # blessed draws to the real stdout
    out = capsys.readouterr().out
    for label in ("Clusters", "Queued", "Successes", "Failures", "Schedules"):
        assert label in out
    config = StringIO()
    call_command("qinfo", "--config", stdout=config)
    assert "VERSION:" in config.getvalue()


@pytest.mark.redis
def test_qinfo_reports_on_a_redis_broker(tmp_path):
    # The broker is chosen when django-q2 loads, so this runs in a process of its own, with a
    # database of its own for the schedules and results qinfo also reads.
    env = {
        **os.environ,
        "REDIS_URL": require_redis(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'q.sqlite3'}",
    }
    migrate(env)
    done = manage("qinfo", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on Redis" in done.stdout and "Queued" in done.stdout
