"""The weekly-report probe's reading of the sink and its report: mails counted once each as the
sink's file grows, a line still being written left for the next read, medians per case."""

from __future__ import annotations

import json

from bench.weekly_report import CASES, Mailbox, Measured, render, sinks_command


def test_the_mailbox_reads_each_complete_line_once_as_the_file_grows(tmp_path):
    path = tmp_path / "mail.jsonl"
    mailbox = Mailbox(path)
    assert mailbox.read() == []

    first, second = json.dumps({"to": ["a@x.example"]}), json.dumps({"to": ["b@x.example"]})
    path.write_text(first + "\n" + second[:5])  # the sink is still writing the second line
    assert [mail["to"] for mail in mailbox.read()] == [["a@x.example"]]

    with path.open("a") as file:
        file.write(second[5:] + "\n")
    assert [mail["to"] for mail in mailbox.read()] == [["a@x.example"], ["b@x.example"]]


def test_the_sinks_command_is_the_procfiles_line_with_its_ports_filled_in():
    command = sinks_command(smtp_port=2525, http_port=8025)

    assert command[command.index("--smtp-port") + 1] == "2525"
    assert command[command.index("--http-port") + 1] == "8025"
    assert not any("$" in word for word in command)


def test_the_report_gives_each_cases_median_and_the_ratio_of_kept_to_fresh_connections():
    kept, fresh = CASES

    def run(case: str, seconds: float, repetition: int) -> Measured:
        return Measured(case, repetition, 1_000, seconds, 2.0, 0.5, 10, 0)

    runs = [run(kept, 4.0, 0), run(fresh, 20.0, 0), run(kept, 5.0, 1), run(fresh, 25.0, 1)]
    report = render(runs, ["# Weekly report"])

    assert f"| {kept} | 1,000 | 225.0 (200.0-250.0) | 2.00 | 0.50 | 10 | 0 |" in report
    assert f"| {fresh} | 1,000 | 45.0 (40.0-50.0) |" in report
    assert "5.00x the e-mails per second" in report
