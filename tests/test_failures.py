"""Issue 26: an application error is a trial's recorded failure, a system failure is retried
(``recipe_search/tune/failures.py``); the retry records (``retries.py``); a node lost during the
preflight (``nodes.py``). No Ray cluster here: the search that retries a killed trial is in
tests/test_search.py, the lost node in tests/integration/test_chaos.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from recipe_search.tune import events  # noqa: E402
from recipe_search.tune.failures import (SystemFailure, classify, failure_report, reported_failure, system_calls)  # noqa: E402


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as e:  # noqa: BLE001
        return e


def test_an_application_error_becomes_a_failure_report():
    report = failure_report(_raised(ValueError("lr must be positive")))
    assert report["failed"] == 1.0 and report["final"] == 1.0
    assert report["error"] == "ValueError: lr must be positive" and report["error_kind"] == "failed"
    assert "Traceback" in report["error_text"]
    assert "epoch" not in report and report["objective"] == 0.0  # ASHA ignores it; Tune's metric check passes
    oom = failure_report(_raised(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    assert oom["error_kind"] == "oom"
    assert reported_failure(report) == ("failed", "ValueError: lr must be positive", report["error_text"])
    assert reported_failure({"final": 1.0, "objective": 0.5}) is None


def test_errors_of_tune_calls_are_system_failures():
    with pytest.raises(SystemFailure, match="OSError: storage unreachable") as e:
        with system_calls():
            raise OSError("storage unreachable")
    assert isinstance(e.value.__cause__, OSError)
    with pytest.raises(SystemExit):  # Tune ends a stopped trial's thread with sys.exit: untouched
        with system_calls():
            raise SystemExit(0)


def test_trial_error_reads_a_report_then_the_latest_failure_of_the_error_file(tmp_path: Path):
    reported = SimpleNamespace(trial_id="t1", last_result=failure_report(_raised(KeyError("x"))), error_file=None)
    assert events.trial_error(reported)[:2] == ("failed", "KeyError: 'x'")
    log = tmp_path / "error.txt"  # Tune appends one block per failure
    log.write_text("Failure # 1 (occurred at 2026-01-01)\nray.exceptions.ActorDiedError: The actor died\n"
                   "Failure # 2 (occurred at 2026-01-01)\nRpcError: Socket closed\n")
    lost = SimpleNamespace(trial_id="t2", last_result={"epoch": 2.0}, error_file=str(log))
    assert events.trial_error(lost)[:2] == ("failed", "RpcError: Socket closed")
    assert classify("Traceback...\nrs_faults.InjectedFault: injected fault in trial t3") == (
        "failed", "InjectedFault: injected fault in trial t3")


def test_the_bridge_forwards_a_reported_failure_as_a_trial_error_and_a_retry_as_a_recover():
    seen = []

    class Listener:
        def on_trial_complete(self, trial, trials):
            seen.append(("complete", trial.trial_id))

        def on_trial_error(self, trial, trials):
            seen.append(("error", trial.trial_id))

        def on_trial_recover(self, trial, trials):
            seen.append(("recover", trial.trial_id))

    events.register("k-bridge", [Listener()])
    try:
        bridge = events.TuneBridge("k-bridge")
        done = SimpleNamespace(trial_id="a", last_result={"final": 1.0, "objective": 0.4})
        failed = SimpleNamespace(trial_id="b", last_result=failure_report(_raised(RuntimeError("bad"))))
        bridge.on_trial_complete(0, [], done)
        bridge.on_trial_complete(0, [], failed)
        bridge.on_trial_recover(0, [], done)
    finally:
        events.unregister("k-bridge")
    assert seen == [("complete", "a"), ("error", "b"), ("recover", "a")]


def test_the_searcher_tells_a_reported_failure_fail():
    from optuna.trial import TrialState

    from recipe_search.tune.searcher import outcome_of

    assert outcome_of(failure_report(_raised(RuntimeError("x"))), error=False) == (TrialState.FAIL.name, None)


def test_a_retry_is_recorded_on_the_trial_run_and_the_parent_run(tmp_path: Path):
    from recipe_search.tune.progress import ProgressView
    from recipe_search.tune.retries import RetryRecorder, parent_counts
    from recipe_search.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "retries")
    from recipe_search import records

    parent = tracker.parent_run(records.Search(search_id="s1"), name="s1", params={})
    runs = {}
    log = tmp_path / "error.txt"
    log.write_text("Failure # 1 (occurred at now)\nray.exceptions.ActorDiedError: The actor died unexpectedly\n")

    def run_for(trial):
        return runs.setdefault(trial.trial_id, tracker.child_run(parent, "s1", trial.trial_id, name="x",
                                                                    trial=records.Trial())[0])

    logger = SimpleNamespace(tracker=tracker, parent_run_id=parent, run_for=run_for, last_step={"t1": 2})
    recorder = RetryRecorder(logger, stage="search")
    view = ProgressView(title="t", num_samples=2, max_epochs=3, max_concurrent=1, enabled=False,
                        log_path=tmp_path / "progress.log", max_retries=2)
    for n, tid in ((1, "t1"), (2, "t1"), (1, "t2")):
        trial = SimpleNamespace(trial_id=tid, last_result={"epoch": 2.0}, error_file=str(log), config={},
                                status="PENDING", run_metadata=SimpleNamespace(num_failures=n))
        recorder.on_trial_recover(trial, [trial])
        view.on_trial_recover(trial, [trial])
    tags = tracker.client.get_run(runs["t1"]).data.tags
    assert tags["rs.retries"] == "2" and tags["rs.status"] == "retrying"
    assert tags["rs.retry_reason"] == "ActorDiedError: The actor died unexpectedly"
    ptags = tracker.client.get_run(parent).data.tags
    assert ptags["rs.retry.t1"] == "2 (search, lost after epoch 2): ActorDiedError: The actor died unexpectedly"
    assert parent_counts(ptags) == (2, 3)
    metrics = tracker.client.get_run(parent).data.metrics
    assert metrics["trials_retried"] == 2 and metrics["trial_retries"] == 3
    lines = (tmp_path / "progress.log").read_text().splitlines()
    assert len(lines) == 3 and "trial t1 (tpe) lost at epoch 2 (ActorDiedError" in lines[1]
    assert "retry 2/2 from its last checkpoint" in lines[1]
    assert "retried 2 (lost node or worker)" in view.render().renderables[1].plain


A, B = "a" * 56, "b" * 56  # Ray node ids (hex)


class FakeRay:
    """Just enough of ``ray`` for ``check_nodes``: node B dies while its check runs."""

    def __init__(self, outcome_b: str):
        self.outcome_b = outcome_b  # "pending" (never answers), "died" (its task errors), "raised"
        self.alive = {A: True, B: True}
        self.cancelled = []
        self.waits = 0

    def nodes(self):
        return [{"NodeID": n, "Alive": a, "NodeManagerAddress": f"10.0.0.{i}", "Resources": {"CPU": 1.0}}
                for i, (n, a) in enumerate(self.alive.items())]

    def remote(self, **kw):
        ray = self

        class Task:
            def options(self, scheduling_strategy):
                node = scheduling_strategy.node_id

                class Bound:
                    def remote(self, *args):
                        return f"ref-{node}"
                return Bound()
        return lambda fn: Task()

    def wait(self, refs, num_returns, timeout):
        self.waits += 1
        self.alive[B] = False  # B leaves the cluster while the driver waits
        return [r for r in refs if r == f"ref-{A}" or self.outcome_b != "pending"], \
            [r for r in refs if r == f"ref-{B}" and self.outcome_b == "pending"]

    def get(self, ref):
        from ray.exceptions import RayTaskError, WorkerCrashedError

        if ref == f"ref-{B}" and self.outcome_b == "died":
            raise WorkerCrashedError()
        if ref == f"ref-{B}" and self.outcome_b == "raised":
            raise RayTaskError("probe", "Traceback ...\nModuleNotFoundError: trainer", ImportError("trainer"))
        return {"host": "a", "problems": []}

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)


@pytest.mark.parametrize("outcome_b", ["pending", "died"])
def test_a_node_lost_during_the_preflight_is_skipped_not_waited_on(tmp_path: Path, outcome_b):
    from recipe_search.tune.nodes import check_nodes

    ray = FakeRay(outcome_b)
    notes = check_nodes(ray, tmp_path / "storage", None, 32, 0, timeout=3600, poll=0.01)
    assert notes[0].startswith("1 Ray node(s) checked") and len(notes) == 2, notes
    assert notes[1].startswith("node 10.0.0.1 (bbbbbbbb)") and notes[1].endswith("was lost during the preflight: skipped")
    assert ray.waits == 1  # not the hour of the timeout
    assert ray.cancelled == ([f"ref-{B}"] if outcome_b == "pending" else [])
    assert not list((tmp_path / "storage").iterdir())  # the probe file is removed


def test_a_check_that_raised_on_a_live_node_is_still_a_problem(tmp_path: Path):
    from recipe_search.errors import SearchError
    from recipe_search.tune.nodes import check_nodes

    ray = FakeRay("raised")
    ray.wait = lambda refs, num_returns, timeout: (list(refs), [])  # B stays alive
    with pytest.raises(SearchError, match=r"node 10.0.0.1 \(bbbbbbbb\): the check failed: RayTaskError"):
        check_nodes(ray, tmp_path / "storage", None, 32, 0, poll=0.01)
