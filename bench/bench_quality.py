"""Evidence that the search works: the studies behind docs/results.md (one command each, resumable).

    python bench/bench_quality.py seed-noise         # baselines + untrained floor, >= 5 seeds
    python bench/bench_quality.py fidelity           # 12 recipes at the budget's epochs and at 3x
    python bench/bench_quality.py search-vs-random   # TPE+ASHA against random search, equal trial-epochs
    python bench/bench_quality.py lift               # one full search: its winner against baselines and floor
    python bench/bench_quality.py aa                 # A/A: a confirmation whose finalist is the baseline renamed
    python bench/bench_quality.py transfer --backbone efficientnet_b0   # cold search vs warm-started from another
    python bench/bench_quality.py samplers --samplers tpe,random,tpe-mv,local,gp   # samplers at equal compute, paired repeats
    python bench/bench_quality.py report             # docs/results.md and its PNGs from the raw results
    python bench/bench_quality.py refresh            # re-read recorded searches from MLflow (older rows)

Every study runs at ``--budget`` (default ``cpu``: the CPU budget that learns; ``proxy`` is the
same study on a GPU) on ``--data`` (default: the shared CIFAR-10 beside the repository).
Each training is one job: its result is appended to ``docs/results/<study>.jsonl`` the moment
it ends and logged as an MLflow run in the experiment ``quality-<study>`` (params, per-epoch
val kNN and loss, final metrics), so ``recipe-search ui`` shows the study. A killed study
continues where it stopped when run again: finished jobs are skipped, a running job resumes
from its last epoch checkpoint (``$RECIPE_SEARCH_HOME/quality/``). ``--jobs`` trainings run at
once, each on one torch thread on the CPU.

Nothing here selects on the test split: the fidelity study *reports* how a short run's val
score predicts a long run's test score, which is the question it asks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "docs" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
STUDIES = ("seed-noise", "fidelity", "search-vs-random", "lift", "aa", "transfer", "samplers")


# -- the set-up every study shares ---------------------------------------------------------

class Setup:
    """The budget's plan, fitted data spec and trial context, as ``recipe-search run`` builds them."""

    def __init__(self, args):
        from recipe_search import config
        from recipe_search.baselines import baselines_for
        from recipe_search.plan import SearchSettings, plan, prepare_data
        from recipe_search.tune.trial import TrialContext

        self.args = args
        self.settings = SearchSettings(backbone=args.backbone, data=str(args.data), budget=args.budget,
                                       seed=args.seed, space=args.space)
        self.plan = plan(self.settings)
        self.proxy = prepare_data(self.plan)
        self.budget = self.plan.budget
        self.ctx = TrialContext(backbone=args.backbone, space=self.plan.space, budget_fixed=dict(self.budget.fixed),
                                image_size=self.budget.image_size, max_epochs=self.plan.max_epochs,
                                seed=args.seed, data=self.plan.data,
                                baselines=baselines_for(self.plan.space))
        self.tracking_uri = args.tracking_uri or config.default_tracking_uri()
        self.work = config.home() / "quality"

    def recipe(self, config: dict, seed: int, epochs: int | None = None):
        recipe = self.ctx.recipe_for(config)[0]
        return recipe.replace(seed=seed, epochs=epochs or self.plan.max_epochs)

    def baseline(self, name: str, seed: int, epochs: int | None = None):
        return self.recipe({"baseline": name}, seed, epochs)

    def job(self, study: str, key: str, name: str, role: str, recipe, kind: str = "train", **extra) -> dict:
        return {"study": study, "key": key, "name": name, "role": role, "kind": kind,
                "recipe": recipe.to_dict(), "seed": recipe.seed, "epochs": recipe.epochs,
                "data": dataclasses.asdict(self.plan.data),
                "data_seed": self.args.seed, "budget": self.budget.name, "backbone": self.args.backbone, **extra}


# -- running jobs ----------------------------------------------------------------------------

def results_path(study: str) -> Path:
    return RESULTS / f"{study.replace('-', '_')}.jsonl"


def load_results(study: str) -> list[dict]:
    path = results_path(study)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_job(job: dict, work: str) -> dict:
    """One training (or the floor) in a worker process, on one CPU thread."""
    import torch

    torch.set_num_threads(1)
    from trainer import Recipe, train
    from trainer.data import DataSpec, load_proxy
    from trainer.engine import random_init_metrics

    recipe = Recipe.from_dict(job["recipe"])
    proxy = load_proxy(DataSpec(**job["data"]), recipe.image_size, job["data_seed"])
    t0 = time.perf_counter()
    if job["kind"] == "floor":
        metrics, history, status = random_init_metrics(recipe, proxy, device="cpu"), [], "completed"
    else:
        res = train(recipe, proxy, out_dir=Path(work) / job["study"] / job["key"], device="cpu", resume=True)
        metrics, history, status = res.metrics, res.history, res.status
    return {**{k: v for k, v in job.items() if k != "data"}, "status": status, "metrics": metrics,
            "history": [{k: h[k] for k in ("epoch", "loss", "val_knn_top1") if k in h} for h in history],
            "wall_s": time.perf_counter() - t0, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _log_mlflow(setup: Setup, result: dict) -> None:
    import mlflow
    from mlflow import MlflowClient

    from recipe_search import records

    mlflow.set_tracking_uri(setup.tracking_uri)
    client = MlflowClient(setup.tracking_uri)
    name = f"quality-{result['study']}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=result["key"], tags={
        records.TAG_STUDY: result["study"], records.TAG_ROLE: result["role"], records.TAG_NAME: result["name"],
        records.TAG_KIND: result["kind"], records.TAG_STATUS: result["status"], records.TAG_BUDGET: result["budget"],
        records.TAG_BACKBONE: result["backbone"]})
    from mlflow.entities import Metric, Param

    params = {f"recipe.{k}": v for k, v in result["recipe"].items() if not isinstance(v, dict)}
    params.update(seed=result["seed"], epochs=result["epochs"], kind=result["kind"])
    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, 0) for k, v in result["metrics"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for h in result["history"]:
        metrics += [Metric(f"epoch_{k}", float(h[k]), ts, int(h["epoch"])) for k in ("loss", "val_knn_top1")
                    if k in h]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, str(v)[:500]) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED" if result["status"] == "completed" else "FAILED")


def _write_machine() -> None:
    """``machine.json``: what the results were measured on (first study run wins)."""
    path = RESULTS / "machine.json"
    if path.exists():
        return
    from bench._common import machine

    path.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d")}, indent=2))


def run_jobs(setup: Setup, study: str, jobs: list[dict]) -> list[dict]:
    """Run the jobs not yet in the study's results, ``--jobs`` at a time; return all results."""
    done = {r["key"] for r in load_results(study)}
    todo = [j for j in jobs if j["key"] not in done]
    print(f"[{study}] {len(jobs) - len(todo)} of {len(jobs)} jobs done already; running {len(todo)}, "
          f"{setup.args.jobs} at a time", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write_machine()
    t0 = time.monotonic()
    if todo:
        import multiprocessing as mp

        with ProcessPoolExecutor(setup.args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_job, j, str(setup.work)): j for j in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                job = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - recorded, the study goes on
                    result = {**{k: v for k, v in job.items() if k != "data"}, "status": "failed",
                              "error": f"{type(e).__name__}: {e}", "metrics": {}, "history": [], "wall_s": 0}
                with results_path(study).open("a") as f:
                    f.write(json.dumps(result) + "\n")
                try:
                    _log_mlflow(setup, result)
                except Exception as e:  # noqa: BLE001 - the raw result is kept either way
                    print(f"[{study}] MLflow logging failed for {result['key']}: {e}", flush=True)
                elapsed = time.monotonic() - t0
                eta = elapsed / i * (len(todo) - i)
                m = result["metrics"]
                print(f"[{study}] {i}/{len(todo)} {result['key']}: {result['status']}, val kNN "
                      f"{m.get('val_knn_top1', float('nan')):.3f}, test probe {m.get('test_probe_top1', float('nan')):.3f} "
                      f"({result['wall_s']:.0f} s; elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min)", flush=True)
    return load_results(study)


# -- the studies ---------------------------------------------------------------------------------

def seed_noise(setup: Setup) -> None:
    from recipe_search.baselines import FLOOR_BASELINE

    jobs = []
    for seed in range(1, setup.args.seeds + 1):
        floor = setup.baseline(FLOOR_BASELINE, seed)
        jobs.append(setup.job("seed-noise", f"floor-s{seed}", "floor", "floor", floor, kind="floor"))
        for b in setup.ctx.baselines:
            jobs.append(setup.job("seed-noise", f"{b.name}-s{seed}", b.name, "baseline", setup.baseline(b.name, seed)))
    run_jobs(setup, "seed-noise", jobs)


def _search(setup: Setup, search_id: str, experiment: str, extra: list[str], backbone: str | None = None) -> dict:
    """Run (or resume) one ``recipe-search run`` (of ``backbone``, default ``--backbone``) and return
    its verdict and search-stage cost."""
    from recipe_search.state import read_meta, storage_dir

    meta = storage_dir() / search_id / "recipe_search.json"
    cmd = [sys.executable, "-m", "recipe_search", "run", "--backbone", backbone or setup.args.backbone, "--data",
           str(setup.args.data), "--budget", setup.args.budget, "--tracking-uri", setup.tracking_uri,
           "--experiment", experiment,
           "--search-id", search_id, "--no-progress", *extra]
    status = (read_meta(meta) or {}).get("status") if meta.exists() else None
    if status is not None and status != "finished":
        cmd.append("--resume")
    if status != "finished":
        print("[search] " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT)
        try:
            proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the search too: let it save its state and stop
            proc.wait()  # (subprocess.run would SIGKILL it 0.25 s later, leaving it marked running)
            raise
    state = json.loads(meta.read_text()) if meta.exists() else {}
    if state.get("status") != "finished":  # stopped (a signal, the session's end) or failed: say so, no traceback
        raise SystemExit(f"[search] {search_id} did not finish (status {state.get('status') or 'not started'}, "
                         f"exit code {proc.returncode}); run the same command again to resume it")
    return _search_outcome(setup.tracking_uri, search_id, state)


def _search_outcome(tracking_uri: str, search_id: str, state: dict) -> dict:
    from mlflow import MlflowClient

    from recipe_search.verdict.confirm import recipes_of
    from recipe_search.verdict.promote import confirmation_runs, summarize
    from recipe_search.tracking import Tracker

    tracker = Tracker(tracking_uri, state.get("experiment", "recipe-search"))
    everything = summarize(tracker, search_id)
    trials = [t for t in everything if t.stage == "search"]
    client = MlflowClient(tracking_uri)
    # each search trial's val kNN curve (ASHA-stopped ones included); its length is the epochs it trained
    curves = {}
    for t in trials:
        by_step = {m.step: m.value for m in client.get_metric_history(t.run_id, "val_knn_top1")}
        curves[t.run_id] = [by_step[e] for e in sorted(by_step)]
    trial_epochs = sum(len(c) for c in curves.values())
    path = client.download_artifacts(state["parent_run_id"], "verdict.json")
    verdict = json.loads(Path(path).read_text())
    # every confirmed recipe's figures in seed order (the searched finalist's too, when a baseline wins): val from
    # the select phase, test from the report phase (searches from before the two phases: both from their one phase)
    recipes = recipes_of(state["jobs"])
    select = {r.name: r for r in confirmation_runs(everything, recipes, "select")}
    report = {r.name: r for r in confirmation_runs(everything, recipes, "report")}
    confirmed = {}
    for name, r in report.items():
        sel = select.get(name) if select.get(name) and select[name].runs else r
        confirmed[name] = {"role": r.role,
                           "select_seeds": sorted(s_ for s_ in sel.runs if "val_knn_top1" in sel.runs[s_]),
                           "report_seeds": sorted(s_ for s_ in r.runs if "test_probe_top1" in r.runs[s_])}
        confirmed[name]["val_knn_top1"] = [sel.runs[s_]["val_knn_top1"] for s_ in confirmed[name]["select_seeds"]]
        confirmed[name]["test_probe_top1"] = [r.runs[s_]["test_probe_top1"] for s_ in confirmed[name]["report_seeds"]]
    for name, sel in select.items():  # recipes the report phase did not train: val only
        if name not in confirmed:
            seeds = sorted(s_ for s_ in sel.runs if "val_knn_top1" in sel.runs[s_])
            confirmed[name] = {"role": sel.role, "select_seeds": seeds, "report_seeds": [],
                               "val_knn_top1": [sel.runs[s_]["val_knn_top1"] for s_ in seeds], "test_probe_top1": []}
    return {"search_id": search_id, "status": state.get("status"), "search_wall_s": state.get("wall_s"),
            "trial_epochs": trial_epochs,
            "trials": len(trials), "verdict": verdict, "confirmed": confirmed,
            # per trial: the sampled point (canonical JSON; None for a baseline), status and val kNN per epoch.
            # Training is deterministic per (recipe, seed), so two searches with the same seed that sample the
            # same point train it identically: the random search shows where an ASHA-stopped trial would have ended
            "search_trials": [{"name": t.baseline or t.trial_id, "point": None if t.baseline else t.point,
                               "status": t.status, "val_knn": curves[t.run_id]} for t in trials]}


def search_vs_random(setup: Setup) -> None:
    done = {r["key"] for r in load_results("search-vs-random")}
    for rep in range(setup.args.repeats):
        seed = 100 + rep
        for method in ("tpe-asha", "random"):
            key = f"{method}-r{rep}"
            if key in done:
                continue
            extra = ["--seed", str(seed)]
            if method == "random":  # the same total trial-epochs as TPE+ASHA used in this repeat
                tpe = next(r for r in load_results("search-vs-random") if r["key"] == f"tpe-asha-r{rep}")
                n = max(2, round(tpe["trial_epochs"] / setup.plan.max_epochs))
                extra += ["--sampler", "random", "--no-early-stopping", "--num-samples", str(n)]
            t0 = time.monotonic()
            out = _search(setup, f"q-rs-{setup.args.budget}-{key}", "quality-search-vs-random", extra)
            # the search's own clock counts every session of a resumed search; this process only its last
            out.update(key=key, method=method, repeat=rep, seed=seed,
                       wall_s=out.pop("search_wall_s") or time.monotonic() - t0,
                       budget=setup.args.budget, backbone=setup.args.backbone)
            with results_path("search-vs-random").open("a") as f:
                f.write(json.dumps(out) + "\n")
            print(f"[search-vs-random] {key}: {out['trial_epochs']} trial-epochs, winner "
                  f"{out['verdict']['winner']} test probe {out['verdict']['score']['mean']:.3f}", flush=True)


LIFT_KEY = "lift-sequential"  # the lift study under the two-phase, sequential verdict


def lift(setup: Setup) -> None:
    """One search under the two-phase sequential verdict (key ``lift-sequential``); the row the old
    design measured (key ``lift``) is kept beside it for its wall time and verdict."""
    if any(r.get("key") == LIFT_KEY for r in load_results("lift")):
        print(f"[lift] done already; delete its row ({LIFT_KEY}) from docs/results/lift.jsonl to run it again")
        return
    t0 = time.monotonic()
    out = _search(setup, f"q-lift2-{setup.args.budget}-s{setup.args.seed}", "quality-lift",
                  ["--seed", str(setup.args.seed)])
    out.update(key=LIFT_KEY, wall_s=out.pop("search_wall_s") or time.monotonic() - t0, budget=setup.args.budget,
               backbone=setup.args.backbone)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with results_path("lift").open("a") as f:
        f.write(json.dumps(out) + "\n")
    print(f"[lift] {out['verdict']['line']}", flush=True)


def refresh(tracking_uri: str) -> None:
    """Re-read every recorded search (search-vs-random, lift) from MLflow, read-only, and rewrite its
    MLflow-derived fields with what this version records; the fields of the run itself (wall time,
    repeat, seed) stay. For rows written by an older bench_quality."""
    from recipe_search.state import read_meta, storage_dir

    for study in ("search-vs-random", "lift"):
        rows = load_results(study)
        for r in rows:
            state = read_meta(storage_dir() / r["search_id"] / "recipe_search.json")
            if state is None or state.get("status") != "finished":
                print(f"[refresh] {r['search_id']}: no finished search state here; row kept as it was")
                continue
            fresh = _search_outcome(tracking_uri, r["search_id"], state)
            fresh.pop("search_wall_s")
            changed = sorted(k for k in fresh if k in r and fresh[k] != r[k])
            print(f"[refresh] {r['search_id']}: added {sorted(set(fresh) - set(r)) or 'nothing'}; "
                  f"changed {changed or 'nothing'}")
            r.update(fresh)
        if rows:
            tmp = results_path(study).with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, results_path(study))


def seed_list(text: str) -> list[int]:
    """``1,2`` -> [1, 2] (argparse reports a ValueError as an invalid value of the option)."""
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=(*STUDIES, "report", "refresh"))
    ap.add_argument("--budget", default="cpu", help="cpu (2 cores, default) | proxy (GPU) | smoke | tiny")
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 root or .tar.gz")
    ap.add_argument("--space", default=None, help="search-space YAML (default: the backbone's)")
    ap.add_argument("--seed", type=int, default=0, help="search seed; the proxy subset is drawn with it")
    ap.add_argument("--seeds", type=int, default=5, help="seed-noise: seeds per recipe")
    ap.add_argument("--recipes", type=int, default=12, help="fidelity: recipes (both baselines among them)")
    ap.add_argument("--long-factor", type=int, default=3, help="fidelity: the long run's epochs / the budget's")
    ap.add_argument("--long-seeds", type=seed_list, default=[],
                    help="fidelity: extra seeds for the long runs, e.g. 1,2 (independent of the short run's --seed)")
    ap.add_argument("--short-seeds", type=seed_list, default=[],
                    help="fidelity: extra seeds for the short runs, e.g. 3,4 (seeds as a fidelity: k short seeds "
                         "against one long seed at equal trial-epochs; use seeds --long-seeds does not)")
    ap.add_argument("--repeats", type=int, default=3, help="search-vs-random: repeats per method; aa: confirmations")
    ap.add_argument("--source", default="mobilenetv3_small_100", help="transfer: the backbone searched first")
    ap.add_argument("--search-args", default="",
                    help="transfer: recipe-search run options for every search of the study (recorded in each row), "
                         "e.g. '--confirm-k 1 --confirm-seeds 2 --report-looks 3' for a lighter confirmation")
    ap.add_argument("--samplers", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                    default=["tpe", "random"], help="samplers: the methods compared, e.g. tpe,tpe-mv,local,random")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="trainings at once")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: recipe-search's)")
    ap.add_argument("--out", default=str(RESULTS), help="raw results folder (default docs/results)")
    args = ap.parse_args(argv)
    RESULTS = Path(args.out)
    if args.study == "report":
        from quality_report import write_report

        write_report(RESULTS, RESULTS.parent / "results.md")
        return 0
    if args.study == "refresh":
        from recipe_search import config

        refresh(args.tracking_uri or config.default_tracking_uri())
        return 0
    if set(args.short_seeds) & set(args.long_seeds):
        ap.error("--short-seeds and --long-seeds must not share a seed (the long seeds are the target)")
    if args.seeds < 2 or args.recipes < 4 or args.long_factor < 2 or args.repeats < 1 or args.jobs < 1:
        ap.error("--seeds >= 2, --recipes >= 4, --long-factor >= 2, --repeats >= 1, --jobs >= 1")
    if not Path(args.data).exists():
        ap.error(f"--data {args.data} does not exist")
    if args.study == "samplers":
        from recipe_search.samplers import SAMPLERS

        unknown = [m for m in args.samplers if m not in SAMPLERS]
        if unknown or len(args.samplers) < 2 or len(set(args.samplers)) != len(args.samplers):
            ap.error(f"--samplers must name at least two distinct samplers of {', '.join(SAMPLERS)}, "
                     f"got {','.join(args.samplers)}")
    setup = Setup(args)
    if args.study == "aa":
        from quality_aa import aa

        aa(setup, run_jobs, load_results, RESULTS)
        return 0
    if args.study == "transfer":
        from bench.quality_transfer import transfer

        transfer(setup, _search, results_path)
        return 0
    if args.study == "samplers":
        from bench.quality_samplers import samplers

        samplers(setup, _search, results_path)
        return 0
    if args.study == "fidelity":
        from bench.quality_fidelity import fidelity

        fidelity(setup, run_jobs)
        return 0
    {"seed-noise": seed_noise, "search-vs-random": search_vs_random, "lift": lift}[args.study](setup)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
