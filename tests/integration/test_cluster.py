"""The multi-machine setup on one machine: PostgreSQL (throwaway cluster), an MLflow tracking
server over it, a Ray cluster of two nodes (head + worker), ``recipe-search run`` joining
them with the Optuna study in PostgreSQL, ``recipe-search serve`` reading the promoted recipe
back, a resume from a second driver, the MLflow UI in headless Chromium, the metric write
rates per tracking backend, and a teardown that leaves no process.

Run with ``.ci/integration`` (or ``RECIPE_SEARCH_INTEGRATION=1 .venv/bin/python -m pytest -m
integration tests/integration -q``). The tests in this module run in file order and share
one set of services.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BACKBONE = "mobilenetv3_small_050"
BUDGET = "smoke"  # the README's budget (32 px, 4 epochs), cut to 4 trials, then 6 after the resume
RECIPE_SEARCH = Path(sys.executable).parent / "recipe-search"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


svc = _load("rs_it_services", HERE / "services.py")
browser = _load("rs_it_browser", HERE / "browser.py")


def _say(capsys, msg: str) -> None:
    with capsys.disabled():
        print(f"\n[integration] {msg}", flush=True)


class Cluster:
    """The services of this module; ``close()`` stops them in reverse order (idempotent)."""

    def __init__(self) -> None:
        # short root: Ray's AF_UNIX sockets live under it
        self.root = Path(tempfile.mkdtemp(prefix="rsit", dir="/tmp"))
        os.chmod(self.root, 0o711)  # the postgres user must reach its data dir below
        self.tracker = svc.ProcessTracker(marker=str(self.root))
        self.stack = contextlib.ExitStack()
        self.closed = False
        self.timings: dict[str, float] = {}
        self.env = {
            "RECIPE_SEARCH_HOME": str(self.root / "home"),
            "RECIPE_SEARCH_CACHE": str(self.root / "cache"),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_LOGGING_LEVEL": "WARNING",
            # Ray >= 2.5x authenticates GCS clients with a token; give the head node and the
            # drivers the same throwaway one (not ~/.ray/auth_token, which CI may not have)
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }

    def start(self) -> "Cluster":
        t0 = time.monotonic()
        self.pg = svc.start_postgres(self.root / "pg", tracker=self.tracker)
        self.stack.callback(self.pg.stop)
        for db in ("mlflow", "optuna"):
            self.pg.createdb(db)
        self.tracker.sample()
        self.timings["postgres_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        self.mlflow = svc.start_mlflow(self.pg.url("mlflow"), self.root / "mlflow", tracker=self.tracker)
        self.stack.callback(self.mlflow.stop)
        self.timings["mlflow_server_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        # two Ray nodes of one CPU each: trials run on both raylets, as on a real cluster
        self.ray = svc.start_ray_head(self.root / "ray", num_cpus=1, env=self.env, tracker=self.tracker)
        self.stack.callback(svc.stop_ray_head, self.ray, self.tracker)
        self.ray_worker = svc.start_ray_worker(self.ray, num_cpus=1, env=self.env, tracker=self.tracker)
        self.stack.callback(svc.stop_ray_worker, self.ray_worker, self.tracker)
        self.timings["ray_nodes_s"] = time.monotonic() - t0
        self.tracker.sample()
        return self

    def start_api(self):
        api = svc.start_api(self.mlflow.url, self.root, tracker=self.tracker)
        self.stack.callback(api.stop)
        return api

    def recipe_search(self, *args: str, home: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "COLUMNS": "200"}
        if home:
            env["RECIPE_SEARCH_HOME"] = home
        proc = subprocess.Popen([str(RECIPE_SEARCH), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=self.root, start_new_session=True)
        self.tracker.add(proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.tracker.sample()
            svc._terminate(proc)
            out, _ = proc.communicate()
            raise AssertionError(f"recipe-search {' '.join(args)} timed out after {timeout}s:\n{out[-5000:]}")
        self.tracker.sample()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def close(self) -> list[str]:
        """Stop everything; returns the processes still alive afterwards (should be none)."""
        if not self.closed:
            self.closed = True
            self.tracker.sample()
            self.stack.close()
            deadline = time.monotonic() + 15
            while self.tracker.leftovers() and time.monotonic() < deadline:
                time.sleep(0.5)
        return self.tracker.leftovers()


@pytest.fixture(scope="module")
def cluster():
    if svc.pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run .ci/integration (apt-get install -y postgresql)")
    for mod in ("psycopg", "psycopg2"):
        pytest.importorskip(mod, reason="pip install -e '.[integration]'")
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        left = c.close()
        if left:
            c.tracker.kill_all()
        shutil.rmtree(c.root, ignore_errors=True)


@pytest.fixture(scope="module")
def state():
    return {}


def data_args() -> list[str]:
    if CIFAR.exists():
        return ["--dataset", "cifar10", "--data", str(CIFAR)]
    return ["--dataset", "synthetic"]


def test_search_on_the_cluster(cluster, state, capsys):
    _say(capsys, f"services up in {cluster.timings}; root {cluster.root}")
    t0 = time.monotonic()
    res = cluster.recipe_search(
        "run", "--backbone", BACKBONE, "--budget", BUDGET, "--num-samples", "4", *data_args(), "--no-progress",
        "--confirm-seeds", "2", "--ray-address", f"127.0.0.1:{cluster.ray.port}", "--tracking-uri", cluster.mlflow.url,
        "--study-storage", cluster.pg.url("optuna"))
    state["search_s"] = time.monotonic() - t0
    _say(capsys, f"search on the cluster: {state['search_s']:.0f}s, exit {res.returncode}")
    assert res.returncode == 0, res.stdout[-6000:]
    assert "verdict: " in res.stdout and "confirmation" in res.stdout, res.stdout[-4000:]
    assert "2 Ray node(s) checked" in res.stdout, res.stdout[-4000:]  # the preflight, on both nodes
    rows = cluster.pg.psql("mlflow", "select t.value from tags t join runs r on r.run_uuid = t.run_uuid "
                                     "where t.key = 'rs.search_id' and exists (select 1 from tags k where "
                                     "k.run_uuid = r.run_uuid and k.key = 'rs.kind' and k.value = 'search')")
    assert len(rows) == 1, rows
    state["search_id"] = rows[0][0]


def _trial_runs(cluster, search_id: str, stage: str | None = "search") -> list[list[str]]:
    """The search's trial runs of ``stage`` (search | confirmation; None: both)."""
    where = f"and st.value = '{stage}'" if stage else ""
    return cluster.pg.psql("mlflow", f"""
        select r.run_uuid, r.status, tid.value from runs r
        join tags kind on kind.run_uuid = r.run_uuid and kind.key = 'rs.kind' and kind.value = 'trial'
        join tags sid on sid.run_uuid = r.run_uuid and sid.key = 'rs.search_id' and sid.value = '{search_id}'
        join tags st on st.run_uuid = r.run_uuid and st.key = 'rs.stage'
        left join tags tid on tid.run_uuid = r.run_uuid and tid.key = 'rs.trial_id'
        where r.lifecycle_stage = 'active' {where}""")


def _told_baselines() -> int:
    """How many baselines are points of the backbone's space (the sampler hears only of those)."""
    from recipe_search.baselines import BASELINES
    from recipe_search.budget import get_budget
    from recipe_search.search import baseline_point
    from recipe_search.space import load_space
    from recipe_search.trial import TrialContext

    b = get_budget(BUDGET)
    space = load_space(None, BACKBONE).with_fixed(b.fixed)
    ctx = TrialContext(backbone=BACKBONE, space=space, budget_fixed=dict(b.fixed), image_size=b.image_size,
                       max_epochs=b.max_epochs, seed=0, data=None, baselines=BASELINES)
    return sum(baseline_point(space, ctx, x.name) is not None for x in BASELINES)


def test_runs_are_in_postgres(cluster, state):
    if "search_id" not in state:
        pytest.skip("the search failed")
    sid = state["search_id"]
    trials = _trial_runs(cluster, sid)
    assert len(trials) == 4, trials
    assert all(status == "FINISHED" for _, status, _ in trials), trials
    confirmed = _trial_runs(cluster, sid, "confirmation")  # top 1 + 2 baselines x 2 seeds (fewer finalists
    assert len(confirmed) in (4, 6) and all(st == "FINISHED" for _, st, _ in confirmed), confirmed  # if pruned)
    exps = {r[0] for r in cluster.pg.psql("mlflow", "select name from experiments")}
    promoted = cluster.pg.psql("mlflow", f"""select t.value from tags t join tags s on s.run_uuid = t.run_uuid
        where t.key = 'rs.promoted' and s.key = 'rs.search_id' and s.value = '{sid}'""")
    # the store experiment exists once something was promoted (not when the verdict is below_floor)
    assert {"recipe-search"} | ({"recipe-store"} if promoted == [["true"]] else set()) <= exps, (exps, promoted)
    n_metrics = int(cluster.pg.psql("mlflow", "select count(*) from metrics")[0][0])
    n_params = int(cluster.pg.psql("mlflow", "select count(*) from params")[0][0])
    assert n_metrics > 20 and n_params > 20, (n_metrics, n_params)
    # the password of --study-storage never reaches MLflow (there is none here; the key is logged)
    settings_artifacts = list((cluster.mlflow.extra.get("artifacts") or cluster.root / "mlflow" / "artifacts")
                              .rglob("settings.json"))
    assert settings_artifacts, "settings.json artifact not in the server's artifact store"
    saved = json.loads(settings_artifacts[0].read_text())
    assert saved["study_storage"] == cluster.pg.url("optuna"), saved


def test_optuna_study_is_in_postgres(cluster, state):
    if "search_id" not in state:
        pytest.skip("the search failed")
    tables = {r[0] for r in cluster.pg.psql(
        "optuna", "select tablename from pg_tables where schemaname = 'public'")}
    assert {"studies", "trials", "trial_params", "trial_values", "alembic_version"} <= tables, tables
    rows = cluster.pg.psql("optuna", "select s.study_name, t.state, count(*) from studies s "
                                     "join trials t on t.study_id = s.study_id group by 1, 2")
    assert {r[0] for r in rows} == {f"recipe-search:{state['search_id']}"}, rows
    done = sum(int(n) for _, st, n in rows if st in ("COMPLETE", "PRUNED"))
    assert done == 2 + _told_baselines(), rows  # 2 sampled trials, and the baselines inside the space


def test_api_serves_the_promoted_recipe(cluster, state):
    if "search_id" not in state:
        pytest.skip("the search failed")
    api = cluster.start_api()
    tags = dict(cluster.pg.psql("mlflow", f"""
        select b.key, b.value from tags b join tags s on s.run_uuid = b.run_uuid
        where b.key in ('rs.promoted', 'rs.verdict', 'rs.winner_run_id') and s.key = 'rs.search_id'
        and s.value = '{state["search_id"]}'"""))
    if tags.get("rs.promoted") != "true":  # below the untrained floor: nothing is served
        assert tags["rs.verdict"] == "below_floor", tags
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{api.url}/recipes/{BACKBONE}", timeout=30)
        assert e.value.code == 404
        api.stop()
        return
    with urllib.request.urlopen(f"{api.url}/recipes/{BACKBONE}", timeout=30) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert body["backbone"] == BACKBONE and body["budget"] == BUDGET, body
    assert body["verdict"]["verdict"] == tags["rs.verdict"] and body["source_run_id"] == tags["rs.winner_run_id"]
    assert body["recipe"]["backbone"] == BACKBONE and body["provenance"]["search_id"] == state["search_id"]
    api.stop()


def test_resume_from_another_driver(cluster, state, capsys):
    """A second driver with an empty $RECIPE_SEARCH_HOME (no Tune state) continues the search
    from the study in PostgreSQL and the runs in MLflow: 2 more trials, nothing duplicated."""
    if "search_id" not in state:
        pytest.skip("the search failed")
    sid = state["search_id"]
    t0 = time.monotonic()
    res = cluster.recipe_search(
        "run", "--backbone", BACKBONE, "--budget", BUDGET, *data_args(), "--no-progress", "--resume",
        "--search-id", sid, "--num-samples", "6", "--confirm-seeds", "2",
        "--ray-address", f"127.0.0.1:{cluster.ray.port}", "--tracking-uri", cluster.mlflow.url,
        "--study-storage", cluster.pg.url("optuna"), home=str(cluster.root / "home2"))
    _say(capsys, f"resume from a second driver: {time.monotonic() - t0:.0f}s, exit {res.returncode}")
    assert res.returncode == 0, res.stdout[-6000:]
    assert "continuing its Optuna study" in res.stdout, res.stdout[-4000:]
    rows = cluster.pg.psql("optuna", "select t.state, count(*) from studies s join trials t "
                                     f"on t.study_id = s.study_id where s.study_name = 'recipe-search:{sid}' "
                                     "group by 1")
    states = {st: int(n) for st, n in rows}
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 4 + _told_baselines(), states
    trials = _trial_runs(cluster, sid)
    assert len(trials) == 6, trials
    assert len({tid for _, _, tid in trials}) == 6, trials


def _output_dir() -> Path:
    """Where CI artifacts (screenshots) go: $RECIPE_SEARCH_TEST_OUTPUT or <repo>/test-output."""
    return Path(os.environ.get("RECIPE_SEARCH_TEST_OUTPUT") or REPO / "test-output") / "integration"


def test_mlflow_ui_in_chromium(cluster, state, capsys):
    """Headless Chromium opens the MLflow UI of the tracking server on PostgreSQL: the search's
    parent run is listed, expanding it lists every child trial run, and the chart view renders
    the per-epoch loss curves of the trials (plotly SVG with drawn lines). Screenshots of both
    views are saved under the test output dir (a CI artifact)."""
    if "search_id" not in state:
        pytest.skip("the search failed")
    if browser.find_chromium() is None:
        pytest.fail("Chromium is not installed: run .ci/integration (apt-get install -y chromium)")
    sid = state["search_id"]
    (exp_id, parent_id, parent_name), = cluster.pg.psql("mlflow", f"""
        select r.experiment_id, r.run_uuid, r.name from runs r
        join tags k on k.run_uuid = r.run_uuid and k.key = 'rs.kind' and k.value = 'search'
        join tags s on s.run_uuid = r.run_uuid and s.key = 'rs.search_id' and s.value = '{sid}'""")
    children = dict(cluster.pg.psql("mlflow", f"""
        select r.run_uuid, r.name from runs r join tags p on p.run_uuid = r.run_uuid
        and p.key = 'mlflow.parentRunId' and p.value = '{parent_id}' where r.lifecycle_stage = 'active'"""))
    assert len(children) == len(_trial_runs(cluster, sid, None)) >= 8, children
    out = _output_dir()
    links = "[...document.querySelectorAll('a[href*=\"/runs/\"]')]"
    with browser.Chromium(cluster.root / "chromium", tracker=cluster.tracker) as page:
        page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        page.navigate(f"{cluster.mlflow.url}/#/experiments/{exp_id}/runs")
        page.wait_for(f"{links}.some(a => a.href.endsWith('/runs/{parent_id}') && a.innerText.trim() === "
                      f"{json.dumps(parent_name)})", what=f"the parent run {parent_name!r} in the runs table")
        page.evaluate(f"""(() => {{
            const row = {links}.find(a => a.href.endsWith('/runs/{parent_id}')).closest('[role=row]');
            row.querySelector('button[data-component-id*=runnamecellrenderer]').click(); }})()""")
        listed = page.wait_for(
            f"(() => {{ const ids = {links}.map(a => a.href.split('/runs/').pop());"
            f" const want = {json.dumps(sorted(children))};"
            f" return want.every(id => ids.includes(id)) && {links}.map(a => a.innerText.trim()); }})()",
            what=f"the {len(children)} child trial runs under the expanded parent")
        assert set(children.values()) <= set(listed), (children, listed)
        shot_runs = page.screenshot(out / "mlflow-ui-runs.png")

        page.evaluate("document.querySelector('input[type=radio][value=CHART]').click()")
        search_box = "document.querySelector('input[placeholder=\"Search metric charts\"]')"
        page.wait_for(f"!!{search_box}", what="the chart view's metric search box")
        page.evaluate(f"{search_box}.focus()")
        page.call("Input.insertText", text="loss")
        chart = page.wait_for("""(() => {
            const area = document.querySelector('[data-testid=experiment-view-compare-runs-chart-area]');
            if (!area) return null;
            // "loss" names one chart only: the trials' per-epoch loss (a "val_knn_top1" filter also
            // matches the parent's floor_/confirm_... summaries, and the grid draws charts in view only)
            const plots = [...area.querySelectorAll('.js-plotly-plot')];
            if (plots.length !== 1) return null;
            const stats = plots.map(p => ({
                lines: [...p.querySelectorAll('.scatterlayer .trace path.js-line')]
                    .map(x => x.getAttribute('d') || '').filter(d => d.includes('L')).length,
                points: p.querySelectorAll('.scatterlayer .trace path.point').length}));
            const best = stats.reduce((a, b) => (b.lines > a.lines ? b : a));
            return best.lines > 0 && {text: area.innerText, lines: best.lines, points: best.points,
                                      plots: plots.length};
        })()""", what="a rendered per-epoch loss chart with drawn lines")
        shot_chart = page.screenshot(out / "mlflow-ui-chart.png")
    assert "loss" in chart["text"] and "Step" in chart["text"], chart["text"][:500]
    # per-epoch curves of several trials (the chart shows the runs the table has visible)
    assert chart["lines"] >= 2 and chart["points"] >= 4, chart
    for shot in (shot_runs, shot_chart):
        assert shot.stat().st_size > 20_000, shot  # a blank 1600x1000 PNG is ~10 kB
    _say(capsys, f"MLflow UI in Chromium: parent + {len(children)} child runs listed, per-epoch loss chart with "
                 f"{chart['lines']} lines / {chart['points']} points; screenshots {shot_runs}, {shot_chart}")


def test_tracking_write_rate(cluster, capsys):
    bench = _load("rs_bench_tracking", REPO / "bench" / "bench_tracking.py")
    cluster.pg.createdb("mlflow_bench")
    results = bench.run_backends(cluster.pg.url("mlflow_bench"), cluster.root / "bench", tracker=cluster.tracker)
    _say(capsys, "MLflow metric write rates (same client, one run):\n" + bench.report(results)
         + "\n" + json.dumps(results))
    assert set(results) == {"sqlite", "server+sqlite", "server+pg"}
    assert all(r["log_metric_per_s"] > 0 for r in results.values())


def test_teardown_leaves_no_process(cluster, capsys):
    t0 = time.monotonic()
    left = cluster.close()
    _say(capsys, f"teardown {time.monotonic() - t0:.1f}s; {len(cluster.tracker.seen)} processes tracked, "
                 f"{len(left)} left")
    assert not left, "processes left behind:\n" + "\n".join(left)
    assert not (cluster.pg.root / "data" / "postmaster.pid").exists()
