"""The multi-machine setup on one machine: PostgreSQL (throwaway cluster), an MLflow tracking
server over it, a Ray cluster of two nodes (head + worker), ``recipe-search run`` joining
them with the Optuna study in PostgreSQL, ``recipe-search serve`` reading the promoted recipe
back, a resume from a second driver, the MLflow UI and the search's report page in headless
Chromium (Playwright's sync API driving Debian's ``chromium``; no browser download), the metric
write rates per tracking backend, and a teardown that leaves no process.

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
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# what a closed network needs: no background requests, no component or sync updates
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    """The system Chromium (Debian's ``chromium`` package); Playwright downloads no browser here."""
    for name in CHROMIUM:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def chromium_page(profile: Path, size: tuple[int, int] = (1600, 1000)):
    """One page of a headless system Chromium driven by Playwright's sync API. The profile dir lives
    under the cluster's root, so the process tracker sees every Chromium process (and the teardown
    test proves none is left)."""
    from playwright.sync_api import sync_playwright  # .ci/integration installs it (pip only)

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
        try:
            ctx.set_default_timeout(60_000)
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


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


def data_args() -> list[str]:
    if CIFAR.exists():
        return ["--dataset", "cifar10", "--data", str(CIFAR)]
    return ["--dataset", "synthetic"]


def test_search_on_the_cluster(cluster, state, capsys):
    _say(capsys, f"services up in {cluster.timings}; root {cluster.root}")
    with state.producing("search_id"):
        t0 = time.monotonic()
        res = cluster.recipe_search(
            "run", "--backbone", BACKBONE, "--budget", BUDGET, "--num-samples", "4", *data_args(), "--no-progress",
            "--confirm-seeds", "2", "--ray-address", f"127.0.0.1:{cluster.ray.port}",
            "--tracking-uri", cluster.mlflow.url, "--study-storage", cluster.pg.url("optuna"))
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
    from recipe_search.tune.trial import TrialContext

    b = get_budget(BUDGET)
    space = load_space(None, BACKBONE).with_fixed(b.fixed)
    ctx = TrialContext(backbone=BACKBONE, space=space, budget_fixed=dict(b.fixed), image_size=b.image_size,
                       max_epochs=b.max_epochs, seed=0, data=None, baselines=BASELINES)
    return sum(baseline_point(space, ctx, x.name) is not None for x in BASELINES)


def test_runs_are_in_postgres(cluster, state):
    state.need("search_id")
    sid = state["search_id"]
    trials = _trial_runs(cluster, sid)
    assert len(trials) == 4, trials
    assert all(status == "FINISHED" for _, status, _ in trials), trials
    confirmed = _trial_runs(cluster, sid, "confirmation")
    phases = dict(cluster.pg.psql("mlflow", "select run_uuid, value from tags where key = 'rs.phase'"))
    select = [c for c in confirmed if phases.get(c[0]) == "select"]  # top 1 + 2 baselines x 2 seeds (fewer
    report = [c for c in confirmed if phases.get(c[0]) == "report"]  # finalists if pruned); winner (+ baseline)
    assert len(select) in (4, 6) and len(report) >= 2 and len(select) + len(report) == len(confirmed), confirmed
    assert all(st == "FINISHED" for _, st, _ in confirmed), confirmed
    exps = {r[0] for r in cluster.pg.psql("mlflow", "select name from experiments")}
    promoted = cluster.pg.psql("mlflow", f"""select t.value from tags t join tags s on s.run_uuid = t.run_uuid
        where t.key = 'rs.promoted' and s.key = 'rs.search_id' and s.value = '{sid}'""")
    # the store experiment exists once something was promoted (or a verdict that serves nothing was recorded)
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
    state.need("search_id")
    tables = {r[0] for r in cluster.pg.psql(
        "optuna", "select tablename from pg_tables where schemaname = 'public'")}
    assert {"studies", "trials", "trial_params", "trial_values", "alembic_version"} <= tables, tables
    rows = cluster.pg.psql("optuna", "select s.study_name, t.state, count(*) from studies s "
                                     "join trials t on t.study_id = s.study_id group by 1, 2")
    assert {r[0] for r in rows} == {f"recipe-search:{state['search_id']}"}, rows
    done = sum(int(n) for _, st, n in rows if st in ("COMPLETE", "PRUNED"))
    assert done == 2 + _told_baselines(), rows  # 2 sampled trials, and the baselines inside the space


def test_api_serves_the_promoted_recipe(cluster, state):
    state.need("search_id")
    api = cluster.start_api()
    tags = dict(cluster.pg.psql("mlflow", f"""
        select b.key, b.value from tags b join tags s on s.run_uuid = b.run_uuid
        where b.key in ('rs.promoted', 'rs.verdict', 'rs.winner', 'rs.winner_run_id', 'rs.served')
        and s.key = 'rs.search_id' and s.value = '{state["search_id"]}'"""))
    if tags.get("rs.promoted") != "true":  # the evidence supports no recipe: nothing is served, 404 says why
        assert not tags.get("rs.served"), tags
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{api.url}/recipes/{BACKBONE}", timeout=30)
        assert e.value.code == 404
        body = json.loads(e.value.read())
        assert body.get("verdict") == tags["rs.verdict"] and body.get("next"), body
        api.stop()
        return
    with urllib.request.urlopen(f"{api.url}/recipes/{BACKBONE}", timeout=30) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert body["backbone"] == BACKBONE and body["budget"] == BUDGET, body
    assert body["verdict"]["verdict"] == tags["rs.verdict"] and body["verdict"]["served"] == tags["rs.served"]
    if tags["rs.served"] == tags["rs.winner"]:  # a baseline served in the winner's place has its own run
        assert body["source_run_id"] == tags["rs.winner_run_id"], (body["source_run_id"], tags)
    assert body["recipe"]["backbone"] == BACKBONE and body["provenance"]["search_id"] == state["search_id"]
    api.stop()


def test_resume_from_another_driver(cluster, state, capsys):
    """A second driver with an empty $RECIPE_SEARCH_HOME (no Tune state) continues the search
    from the study in PostgreSQL and the runs in MLflow: 2 more trials, nothing duplicated."""
    state.need("search_id")
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
    state.need("search_id")
    if find_chromium() is None:
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
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(cluster.root / "chromium") as page:
        page.goto(f"{cluster.mlflow.url}/#/experiments/{exp_id}/runs")
        parent_link = page.locator(f"a[href$='/runs/{parent_id}']").filter(has_text=parent_name).first
        parent_link.wait_for()  # the parent run in the runs table
        page.locator("[role=row]").filter(has=parent_link).locator(
            "button[data-component-id*=runnamecellrenderer]").first.click()
        page.wait_for_function(  # the child trial runs under the expanded parent
            """want => { const ids = [...document.querySelectorAll('a[href*="/runs/"]')]
                             .map(a => a.href.split('/runs/').pop());
                         return want.every(id => ids.includes(id)); }""", arg=sorted(children))
        listed = [t.strip() for t in page.locator("a[href*='/runs/']").all_inner_texts()]
        assert set(children.values()) <= set(listed), (children, listed)
        shot_runs = out / "mlflow-ui-runs.png"
        page.screenshot(path=shot_runs)

        page.evaluate("document.querySelector('input[type=radio][value=CHART]').click()")
        search_box = page.get_by_placeholder("Search metric charts")
        search_box.click()
        page.keyboard.insert_text("loss")
        chart = page.wait_for_function("""() => {
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
        }""").json_value()
        shot_chart = out / "mlflow-ui-chart.png"
        page.screenshot(path=shot_chart)
    assert "loss" in chart["text"] and "Step" in chart["text"], chart["text"][:500]
    # per-epoch curves of several trials (the chart shows the runs the table has visible)
    assert chart["lines"] >= 2 and chart["points"] >= 4, chart
    for shot in (shot_runs, shot_chart):
        assert shot.stat().st_size > 20_000, shot  # a blank 1600x1000 PNG is ~10 kB
    _say(capsys, f"MLflow UI in Chromium: parent + {len(children)} child runs listed, per-epoch loss chart with "
                 f"{chart['lines']} lines / {chart['points']} points; screenshots {shot_runs}, {shot_chart}")


_PLOTS_DRAWN = """() => { const imgs = [...document.images];
    return imgs.length > 0 && imgs.every(i => i.complete) &&
           imgs.map(i => ({file: i.dataset.file, w: i.naturalWidth, h: i.naturalHeight})); }"""


def _check_report_page(page, url: str, shot: Path, offline: bool = False) -> list[dict]:
    """Open the report at ``url`` (``offline``: every request but the page's own is refused),
    wait until every plot is decoded, screenshot the whole page; returns the images."""
    refused: list[str] = []
    if offline:
        def route(r):
            if r.request.url == url:
                r.continue_()
            else:
                refused.append(r.request.url)
                r.abort()

        page.route("**/*", route)
    page.goto(url)
    imgs = page.wait_for_function(_PLOTS_DRAWN).json_value()
    for sid in ("verdict", "confirmation", "lift", "floor", "curves", "best-so-far", "importance", "recipe",
                "reproduce"):
        assert page.locator(f"section#{sid}").count() == 1, sid
    page.screenshot(path=shot, full_page=True)
    if offline:
        page.unroute("**/*")
    assert not refused, f"the report asked the network for {refused}"
    assert {"curves.png", "best_so_far.png"} <= {i["file"] for i in imgs}, imgs
    assert all(i["w"] > 100 and i["h"] > 100 for i in imgs), imgs
    return imgs


def test_report_page_in_chromium(cluster, state, capsys):
    """The search's report: ``recipe-search report BACKBONE`` writes it from the MLflow server, it
    opens offline in Chromium with every plot drawn; the same page is the ``report/`` artifact of
    the search's parent run (rebuilt at the end of the resumed search), and ``GET
    /recipes/{backbone}/report`` serves it for the promoted recipe (when the verdict promoted
    nothing, the test promotes the search's winner by hand, so that the route has one to serve)."""
    state.need("search_id")
    if find_chromium() is None:
        pytest.fail("Chromium is not installed: run .ci/integration (apt-get install -y chromium)")
    sid, out = state["search_id"], _output_dir()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    res = cluster.recipe_search("report", BACKBONE, "--tracking-uri", cluster.mlflow.url,
                                "--out", str(cluster.root / "report"), timeout=300)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:]
    assert f"report of search {sid}" in res.stdout, res.stdout[-2000:]
    page_file = cluster.root / "report" / "report.html"
    assert page_file.is_file() and (cluster.root / "report" / "curves.png").is_file()

    from mlflow.tracking import MlflowClient

    from recipe_search.report import report_page
    from recipe_search.store import RecipeStore

    client = MlflowClient(cluster.mlflow.url)
    (parent_id,), = cluster.pg.psql("mlflow", f"""select r.run_uuid from runs r
        join tags k on k.run_uuid = r.run_uuid and k.key = 'rs.kind' and k.value = 'search'
        join tags s on s.run_uuid = r.run_uuid and s.key = 'rs.search_id' and s.value = '{sid}'""")
    logged = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.html", "report/curves.png", "report/best_so_far.png"} <= logged, logged
    artifact = report_page(cluster.mlflow.url, parent_id)
    assert artifact.count("<td>") > 20 and sid in artifact
    assert len(_trial_runs(cluster, sid)) == 6 and artifact.count("<tr class=") >= 6  # after the resume

    store = RecipeStore(cluster.mlflow.url)
    rec = store.get(BACKBONE)
    if rec is None or rec.provenance.get("search_run_id") != parent_id:
        tags = client.get_run(parent_id).data.tags
        # a finished search promotes nothing when its evidence supports no recipe (or there is no verdict)
        assert not tags.get("rs.served"), tags
        winner = tags.get("rs.winner_run_id")
        recipe = (json.loads(client.get_run(winner).data.tags["rs.recipe"]) if winner else {"backbone": BACKBONE})
        store.promote(BACKBONE, tags["rs.dataset"], tags["rs.fingerprint"],
                      recipe, {"test_probe_top1": 0.1},
                      {"search_id": sid, "search_run_id": parent_id, "note": "promoted by the integration test"},
                      scores=[0.1, 0.1], budget=BUDGET, force=True)
    api = cluster.start_api()
    with chromium_page(cluster.root / "chromium-report", size=(1200, 1000)) as page:
        file_imgs = _check_report_page(page, page_file.resolve().as_uri(), out / "report-file.png", offline=True)
        api_imgs = _check_report_page(page, f"{api.url}/recipes/{BACKBONE}/report", out / "report-api.png")
    with urllib.request.urlopen(f"{api.url}/recipes/{BACKBONE}/report", timeout=60) as r:
        etag = r.headers["ETag"]
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html") and etag
    req = urllib.request.Request(f"{api.url}/recipes/{BACKBONE}/report", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 304
    api.stop()
    _say(capsys, f"report: recipe-search report {took:.1f}s; offline file page {len(file_imgs)} plots, API page "
                 f"{len(api_imgs)} plots drawn; screenshots {out / 'report-file.png'}, {out / 'report-api.png'}")


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
