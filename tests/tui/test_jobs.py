"""The jobs pane, the new-job form, job details and the node keys, against the fake agent.

The fake speaks the real control protocol over a real Unix socket; the TUI builds specs
with the same core code as ``lanray-tui submit``. The real queue behind these ops is tested
in tests/test_jobs_lab.py; the real agent behind the TUI in tests/test_tui_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Button, DirectoryTree, Input, OptionList, Static

from lanray_tui.app import LanrayApp
from lanray_tui.core import metrics
from lanray_tui.core.jobs import JobView
from lanray_tui.screens.cluster import ClusterScreen
from lanray_tui.screens.confirm import ConfirmScreen
from lanray_tui.screens.job_details import JobDetailsScreen, metrics_text
from lanray_tui.screens.new_job import PICK_FILE, NewJobScreen
from lanray_tui.widgets.job_table import JobTable, elapsed
from lanray_tui.widgets.log_pane import LogPane
from lanray_tui.widgets.steps import StepList
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.tui import attached, quiet_lan, started, wait_for

SIZE = (100, 30)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fake() -> Iterator[FakeAgent]:
    agent = FakeAgent().start()
    yield agent
    agent.stop()


def notes(app: LanrayApp) -> list[str]:
    return [n.message for n in app._notifications]


def cells(table: JobTable, row: int) -> list[str]:
    return [c.plain for c in table.get_row_at(row)]


async def test_jobs_pane_lists_state_node_and_elapsed_time(fake: FakeAgent) -> None:
    now = time.time()
    fake.add_job("train", "RUNNING", started=now - 65, node="10.9.0.2")
    fake.add_job("map", "QUEUED", created=now - 3)
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4")
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 2, "two jobs listed")
        # the node's name, once the nodes pane knows it (until then its address)
        await wait_for(pilot, lambda: cells(table, 0)[3] == "beta", "the node's name")
        first = cells(table, 0)
        assert first[1:4] == ["train", "RUNNING", "beta"]  # the node's name, not its address
        assert first[4].startswith("1m0")
        assert cells(table, 1)[2:4] == ["QUEUED", "-"]
        assert cells(table, 1)[4].startswith("waiting ")
        note = str(app.screen.query_one("#jobs-note", Static).render())
        assert "1 running" in note and "1 queued" in note
        fake.jobs[1]["state"] = "RUNNING"  # states follow the queue live
        await wait_for(pilot, lambda: cells(table, 1)[2] == "RUNNING", "the state to update")


async def test_a_queue_that_cannot_be_read_says_why(fake: FakeAgent) -> None:
    fake.refuse = {"jobs": "the job queue is not available: disk full"}
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4")
        note = app.screen.query_one("#jobs-note", Static)
        await wait_for(pilot, lambda: "not available" in str(note.render()), "the reason")
        assert "disk full" in str(note.render())
        assert app.screen.query_one(JobTable).row_count == 0  # nothing made up


async def test_new_job_lists_the_sample_jobs_first_then_a_file_picker(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        choices = app.screen.query_one("#job-choices", OptionList)
        ids = [choices.get_option_at_index(i).id for i in range(choices.option_count)]
        names = [Path(i).name for i in ids[:-1] if i]
        assert names == ["gpu_tasks.py", "kfold_cv.py", "parallel_map.py", "train_digits.py"]
        assert ids[-1] == PICK_FILE
        await pilot.press("enter")  # the first sample job
        script = app.screen.query_one("#job-script", Input)
        assert Path(script.value) == REPO / "sample_jobs" / "gpu_tasks.py"
        files = app.screen.query_one("#job-files", DirectoryTree)
        assert not files.display
        choices.focus()
        choices.highlighted = choices.option_count - 1
        await pilot.press("enter")
        await pilot.pause()
        assert files.display and app.focused is files


async def test_new_job_from_a_command_lands_in_the_queue(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        await pilot.press("tab", "tab")  # from the list of jobs, past the script: the command
        assert app.focused is app.screen.query_one("#job-command", Input)
        await pilot.press(*"python -c 'print(42)'")
        app.screen.query_one("#job-cpus", Input).value = "0.5"
        app.screen.query_one("#job-name", Input).value = "answer"
        await pilot.press("ctrl+s")
        await started(pilot, ClusterScreen)
        submit = fake.ops_named("submit")[-1]
        assert submit["spec"]["command"] == ["python", "-c", "print(42)"]
        assert submit["spec"]["num_cpus"] == 0.5 and submit["spec"]["name"] == "answer"
        assert "@" in submit["submitter"]
        assert "queued j-0001" in notes(app)
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the new job in the pane")


def burst(app: LanrayApp, *keys: str) -> None:
    """Hand the app ``keys`` all at once, as a busy machine's terminal does: the app reads
    each key before the ones before it have been handled."""
    for key in keys:
        if len(key) == 1:
            app.post_message(events.Key("space" if key == " " else key, key))
        else:
            app.post_message(events.Key(key, None))


# command, arguments, CPUs, (GPUs left empty), name, each typed once after its Tab; then submit
TYPED_AHEAD = ("tab", "tab", *"echo", "tab", *"hi", "tab", *"0.5", "tab", "tab", *"answer")


async def queued_as_typed(pilot: Pilot[int], fake: FakeAgent) -> None:
    await wait_for(pilot, lambda: bool(fake.ops_named("submit")), "the job to be submitted")
    spec = fake.ops_named("submit")[-1]["spec"]
    assert spec["command"] == ["echo", "hi"]
    assert spec["num_cpus"] == 0.5 and spec["name"] == "answer"


async def test_keys_typed_right_after_the_form_opens_go_into_their_fields(
    fake: FakeAgent,
) -> None:
    """A Tab used to move focus only once handled, so the text right behind it went into
    the field it was leaving (or into the list, lost)."""
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        burst(app, *TYPED_AHEAD, "ctrl+s")
        await queued_as_typed(pilot, fake)


async def test_keys_typed_while_the_form_is_built_go_into_their_fields(fake: FakeAgent) -> None:
    """Keys read before the form has focused its list reach the screen: it replays them."""
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        screen.action_new_job()  # what "n" does; the keys come before the form is built
        burst(app, *TYPED_AHEAD, "ctrl+s")
        await queued_as_typed(pilot, fake)


@pytest.mark.parametrize("submit", ["ctrl+s", "click"])
async def test_new_job_fills_and_submits_at_80x24(fake: FakeAgent, submit: str) -> None:
    """The whole form, its Name field and its Queue button included, works at 80x24."""
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=(80, 24)) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        form = app.screen.query_one("#new-job")
        assert form.max_scroll_y == 0  # it fits: nothing to scroll to
        name = app.screen.query_one("#job-name", Input)
        button = app.screen.query_one("#job-submit", Button)
        for widget in (name, button):  # on screen as it opens, not cut off
            assert app.screen.region.contains_region(widget.region), widget
            assert app.screen.get_widget_at(*widget.region.offset)[0] is widget
        await pilot.press("tab", "tab", *"python -c 'print(42)'", "tab", "tab", *"0.5")
        await pilot.press("tab", "tab", *"answer")
        assert app.focused is name and name.value == "answer"
        assert form.scroll_y == 0  # typing into Name moved nothing
        if submit == "click":
            assert await pilot.click("#job-submit")
        else:
            await pilot.press("ctrl+s")
        await started(pilot, ClusterScreen)
        spec = fake.ops_named("submit")[-1]["spec"]
        assert spec["command"] == ["python", "-c", "print(42)"]
        assert spec["num_cpus"] == 0.5 and spec["name"] == "answer"
        assert "queued j-0001" in notes(app)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, "choose a sample job or a script, or type a command"),
        ({"job-command": "true", "job-script": "x.py"}, "a script or a command, not both"),
        ({"job-command": "true", "job-cpus": "many"}, "CPUs: 'many' is not a number"),
        ({"job-command": "echo 'open"}, "arguments: No closing quotation"),
        ({"job-script": "/nonexistent/train.py"}, "no such script: '/nonexistent/train.py'"),
    ],
)
async def test_new_job_refuses_bad_input_with_one_line(
    fake: FakeAgent, fields: dict[str, str], error: str
) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        for field, value in fields.items():
            app.screen.query_one(f"#{field}", Input).value = value
        await pilot.press("ctrl+s")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the error")
        assert error in steps.error and "\n" not in steps.error
        assert fake.ops_named("submit") == []
        await pilot.press("escape")
        await started(pilot, ClusterScreen)


async def test_a_script_needs_cluster_credentials_to_upload(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "n")
        await started(pilot, NewJobScreen)
        await pilot.press("enter")  # a sample job: its folder must be uploaded first
        await pilot.press("ctrl+s")
        steps = app.screen.query_one(StepList)
        await wait_for(pilot, lambda: bool(steps.error), "the error")
        assert "no cluster credentials" in steps.error
        assert fake.ops_named("submit") == []


async def test_cancel_asks_first_and_retry_requeues(fake: FakeAgent) -> None:
    fake.add_job("long", "RUNNING", started=time.time())
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4")
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the job")
        await pilot.press("c")
        await started(pilot, ConfirmScreen)
        await pilot.press("n")  # keep it
        await started(pilot, ClusterScreen)
        assert fake.ops_named("cancel") == []
        await pilot.press("c")
        await started(pilot, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: "cancelled j-0001" in notes(app), "the cancel")
        await wait_for(pilot, lambda: cells(table, 0)[2] == "CANCELLED", "the new state")
        await pilot.press("r")
        await wait_for(pilot, lambda: "queued j-0001 again (attempt 2)" in notes(app), "retry")


async def test_cancel_or_details_without_a_job_says_so(fake: FakeAgent) -> None:
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4", "c", "enter")
        assert "no job to cancel: select one in the jobs pane (4)" in notes(app)
        assert "no job to show: select one in the jobs pane (4)" in notes(app)


async def test_details_show_the_log_and_plot_the_metrics(fake: FakeAgent) -> None:
    job = fake.add_job("digits", "SUCCEEDED", started=100.0, ended=160.0, exit_code=0)
    fake.job_logs[job["id"]] = [
        "loading digits",
        metrics.metric_line({"epoch": 1, "loss": 0.9, "accuracy": 0.6}),
        metrics.metric_line({"epoch": 2, "loss": 0.4, "accuracy": 0.9}),
        "done",
    ]
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4")
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the job")
        await pilot.press("enter")
        await started(pilot, JobDetailsScreen)
        screen = app.screen
        assert isinstance(screen, JobDetailsScreen)
        await wait_for(pilot, lambda: "loss" in screen.series, "the metrics")
        assert screen.series == {"loss": [0.9, 0.4], "accuracy": [0.6, 0.9]}
        shown = str(screen.query_one("#job-metrics", Static).render())
        assert "loss" in shown and "0.4" in shown and "accuracy" in shown
        pane = screen.query_one(LogPane)
        await wait_for(pilot, lambda: pane.view.total == 4, "the log lines")
        summary = str(screen.query_one("#job-summary", Static).render())
        assert "SUCCEEDED" in summary and "exit code 0" in summary and "1m00s" in summary
        await pilot.press("escape")
        await started(pilot, ClusterScreen)


async def test_details_plot_ray_tune_trials_and_mark_the_best(fake: FakeAgent) -> None:
    """No lanray-metric lines: the metrics come from Ray's result files, one line per trial
    of the metric that picks the best, the best first and marked."""
    from lanray_tui.core import protocol as p

    job = fake.add_job("tune", "RUNNING", started=100.0)
    fake.job_logs[job["id"]] = ["trial runs"]
    fake.ray_metrics[job["id"]] = p.MetricsReply(
        {
            "trial_0": {"mean_loss": [9.0, 5.0], "iterations": [0.0, 1.0]},
            "trial_1": {"mean_loss": [8.0, 2.0], "iterations": [0.0, 1.0]},
        },
        {"trial": "trial_1", "metric": "mean_loss", "mode": "min"},
    )
    app = LanrayApp(watch=quiet_lan)
    async with app.run_test(size=SIZE) as pilot:
        await attached(pilot)
        await pilot.press("4")
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the job")
        await pilot.press("enter")
        await started(pilot, JobDetailsScreen)
        screen = app.screen
        assert isinstance(screen, JobDetailsScreen)
        await wait_for(pilot, lambda: bool(screen.ray_series), "Ray's metrics")
        assert list(screen.ray_series) == ["★ trial_1 mean_loss", "trial_0 mean_loss"]
        shown = str(screen.query_one("#job-metrics", Static).render())
        assert "★ trial_1 mean_loss" in shown and "trial_0 mean_loss" in shown


def test_metrics_are_read_strictly_from_marked_lines() -> None:
    got = metrics.parse(
        [
            'lanray-metric {"epoch": 1, "loss": 1.5, "run": "baseline", "ok": true}',
            "lanray-metric {not json",
            "lanray-metric [1, 2]",
            "epoch 2: loss 0.3 (no marker)",
            'ts=1 lanray-metric {"step": 3, "loss": 0.25, "name": "x"}',
        ]
    )
    assert got == {"baseline loss": [1.5], "loss": [0.25]}
    assert "none yet" in metrics_text({}).plain


def test_elapsed_time_of_each_state() -> None:
    def job(**fields: Any) -> JobView:
        return JobView.from_json({"id": "j-1", **fields})

    assert elapsed(job(state="RUNNING", started=10.0), now=25.0) == "15s"
    assert elapsed(job(state="FAILED", started=10.0, ended=3700.0), now=9e9) == "1h01m"
    assert elapsed(job(state="QUEUED", created=0.0), now=61.0) == "waiting 1m01s"
    assert elapsed(job(state="CANCELLED"), now=1.0) == "-"
