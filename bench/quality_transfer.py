"""Warm start across backbones, measured: a search of ``--backbone`` cold against the same search
warm-started from the results of ``--source`` on the same data.

``python bench/bench_quality.py transfer --backbone efficientnet_b0 --source mobilenetv3_small_100 --repeats 3``

1. One search of the source backbone (seed :data:`SOURCE_SEED`) at the same budget and data, in
   the study's own MLflow store (``$RECIPE_SEARCH_HOME/quality/transfer/mlflow.db`` unless
   ``--tracking-uri`` names one), so that what the warm start reads is exactly that search: its
   served recipe, if any, and its finished trials (``recipe_search/search/warm_start.py``).
2. Repeat ``r`` (seed ``REPEAT_SEED + r``): the target searched cold (``--no-warm-start``), then
   warm (the default), same seed, so that the two differ only in the warm start.

Each search is a row of ``docs/results/transfer.jsonl`` (resumable: a finished search is not run
again). After the source search, the study exports the source's results on the data
(``recipe-search export``) beside it, ``transfer-<source key>.results.json``: carried to a new store
(another machine, a lost home) with the results file, the warm searches read them with
``--warm-start-file`` instead of searching the source again.

A warm search runs its warm points first, and ASHA never stops them (``tune/searcher.py``,
``tune/asha.py``; :data:`WARM_ORDER` ``kept``). Earlier rows ran them after the baselines
(``warm_order`` absent or ``after``) or first but stoppable (``first``, search ids ending
``-first``), measured on the same repeats and shown beside the current order's; the study runs a
repeat's warm search again where it has only rows of another order.

The figure, per repeat: the cold search's final incumbent (the best val kNN top-1 of a
search trial that ran all its epochs), the trial-epochs each search spent until a trial reached
it (:func:`reached_at`: trials in start order, each trial's epochs counted), and what each served.
The goal (issue 22): warm reaches it in at most half the cold search's trial-epochs.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

STUDY = "transfer"
WARM_ORDER = "kept"  # how a warm search runs its warm points: first, never stopped by ASHA
ORDERS = {"kept": "first, run to the end", "after": "after the baselines", "first": "first"}
SOURCE_SEED = 600
REPEAT_SEED = 700


def reached_at(trials: list[dict], target: float) -> int | None:
    """Trial-epochs spent (trials in start order) when a completed trial first reached ``target``
    val kNN; None when none did."""
    spent = 0
    for t in trials:
        spent += len(t.get("val_knn") or [])
        if t.get("status") == "completed" and t.get("val_knn") and t["val_knn"][-1] >= target:
            return spent
    return None


def incumbent(trials: list[dict]) -> float | None:
    """The best final val kNN of a completed search trial."""
    finals = [t["val_knn"][-1] for t in trials if t.get("status") == "completed" and t.get("val_knn")]
    return max(finals) if finals else None


def warm_order(row: dict) -> str:
    """``kept`` (warm points first, never stopped early), ``first`` (first, stoppable) or ``after``
    (after the baselines; older rows name none)."""
    return row.get("warm_order") or "after"


def label(row: dict) -> str:
    """A row's name in the section's lists: its key, a warm search's other than after the baselines marked
    with its order."""
    order = warm_order(row)
    return row["key"] + (f" ({order})" if row["key"].startswith("warm-") and order != "after" else "")


def search_id(budget: str, backbone: str, key: str, order: str = WARM_ORDER) -> str:
    """A study search's id; a warm search whose points ran other than after the baselines has its own."""
    return f"q-tr-{budget}-{backbone}-{key}" + (f"-{order}" if key.startswith("warm-") and order != "after" else "")


def _warm_sources(tracking_uri: str, search_id: str) -> list[dict]:
    from mlflow import MlflowClient

    from recipe_search import records

    c = MlflowClient(tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         records.filter(kind=records.SEARCH, search_id=search_id))
    if not runs:
        return []
    return json.loads(Path(c.download_artifacts(runs[0].info.run_id, "warm_start.json")).read_text())


def source_key(sources: list[str], available) -> str:
    """The source search the next warm searches start from: the newest recorded one whose results are
    at hand (``available(key)``: in the study's store, or exported beside the results file), else a
    new source search's key (``source``, then ``source-2``, ...). A results file carried to a new
    store without them would otherwise warm-start from nothing."""
    for key in sorted(sources, key=_source_n, reverse=True):
        if available(key):
            return key
    return "source" if not sources else f"source-{max(map(_source_n, sources)) + 1}"


def _source_n(key: str) -> int:
    return int(key.split("-")[1]) if "-" in key else 1


def results_file(path: Path, key: str) -> Path:
    """Where source ``key``'s exported results lie: beside the study's results file ``path``."""
    return path.with_name(f"{STUDY}-{key}.results.json")


def export_source(tracking_uri: str, search_id: str, backbone: str, dest: Path) -> Path:
    """Write what the study's store knows of ``backbone`` on the data source search ``search_id`` ran
    on (its served recipe, its finished trials) to ``dest``, as ``recipe-search export`` writes it."""
    from recipe_search import known_results
    from recipe_search.state import read_meta, storage_dir
    from recipe_search.store import RecipeStore

    dataset = read_meta(storage_dir() / search_id / "recipe_search.json")["settings"]["dataset"]
    known = known_results.from_store(RecipeStore(tracking_uri), dataset)
    mine = known_results.KnownResults(served=[r for r in known.served if r.backbone == backbone],
                                      trials=[r for r in known.trials if r.backbone == backbone])
    return known_results.write(mine, dest, source=f"the transfer study's store, search {search_id}")


def _searched(tracking_uri: str, search_id: str) -> bool:
    from mlflow import MlflowClient

    from recipe_search import records

    c = MlflowClient(tracking_uri)
    return bool(c.search_runs([e.experiment_id for e in c.search_experiments()],
                              records.filter(kind=records.SEARCH, search_id=search_id), max_results=1))


def transfer(setup, search, results_path) -> None:
    """Run the study (see the module's docstring): ``search`` is ``bench_quality._search``."""
    from bench._common import machine
    from recipe_search import config

    if not setup.args.tracking_uri:
        home = config.home() / "quality" / STUDY
        home.mkdir(parents=True, exist_ok=True)
        setup.tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    path = results_path(STUDY)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    done = {r["key"] for r in rows if not r["key"].startswith("warm-") or warm_order(r) == WARM_ORDER}
    a = setup.args
    shared = shlex.split(a.search_args or "")  # every search of the study, source included
    sources = [r["key"] for r in rows if r["key"] == "source" or r["key"].startswith("source-")]
    plan = []
    for r in range(a.repeats):
        plan += [(f"cold-r{r}", a.backbone, REPEAT_SEED + r, ["--no-warm-start"], r),
                 (f"warm-r{r}", a.backbone, REPEAT_SEED + r, [], r)]
    src, src_file = None, None
    source_sid = lambda k: search_id(a.budget, a.source, k)  # noqa: E731
    if any(k.startswith("warm-") and k not in done for k, *_ in plan):
        src = source_key(sources, lambda k: _searched(setup.tracking_uri, source_sid(k))
                         or results_file(path, k).exists())
        if src in done and not _searched(setup.tracking_uri, source_sid(src)):  # carried here as its export
            src_file = results_file(path, src)
        plan.insert(0, (src, a.source, SOURCE_SEED, ["--no-warm-start"], None))
    for key, backbone, seed, extra, rep in plan:
        if key in done:
            continue
        sid = search_id(a.budget, backbone, key)
        if key.startswith("warm-") and src_file is not None:
            extra = [*extra, "--warm-start-file", str(src_file)]
        t0 = time.monotonic()
        out = search(setup, sid, "quality-transfer", ["--seed", str(seed), *shared, *extra],
                     backbone=backbone)
        out.update(key=key, method=key.split("-")[0], repeat=rep, seed=seed, backbone=backbone, source=a.source,
                   budget=a.budget, search_args=" ".join(shared), machine=machine(),
                   source_key=src if key.startswith("warm-") else None,
                   warm_start_file=src_file.name if key.startswith("warm-") and src_file else None,
                   wall_s=out.pop("search_wall_s") or time.monotonic() - t0,
                   warm_start=_warm_sources(setup.tracking_uri, sid),
                   **({"warm_order": WARM_ORDER} if key.startswith("warm-") else {}))
        if key == src:
            export_source(setup.tracking_uri, sid, backbone, results_file(path, key))
        with path.open("a") as f:
            f.write(json.dumps(out) + "\n")
        print(f"[transfer] {key} ({backbone}): {out['trial_epochs']} trial-epochs, incumbent val kNN "
              f"{incumbent(out['search_trials'])}, {len(out['warm_start'])} warm point(s)", flush=True)


def transfer_section(rows: list[dict]) -> list[str]:
    """docs/results.md's section: per repeat, trial-epochs to the cold incumbent, cold and warm."""
    if not rows:
        return ["Not run yet."]
    by = {r["key"]: r for r in rows}
    srcs = [r for r in rows if r["key"].startswith("source")]
    out = []
    for src in srcs:
        out += [f"Source `{src['key']}`: one `{src['backbone']}` search (seed {src['seed']}, {src['trial_epochs']} "
                f"trial-epochs, verdict `{src['verdict'].get('verdict')}`), the only results in its store."]
    if len(srcs) > 1:
        out += ["", "The source was searched again where the study ran in a new store (another machine) without "
                    "its exported results: each warm search starts from the source named beside its warm points."]
    files = sorted({(r.get("source_key"), r["warm_start_file"]) for r in rows if r.get("warm_start_file")})
    for key, name in files:
        out += ["", f"Warm searches of `{key}` in a store without it read its results from `{name}` (exported "
                    "beside the results file after the source search) with `--warm-start-file`."]
    out += [""] if srcs else []
    out += [f"Run as: `{command(rows)}`", ""]
    out += ["| repeat | warm points run | cold incumbent (val kNN) | cold: trial-epochs to it (of total) | "
            "warm: earliest possible | warm: trial-epochs to it (of total) | warm / cold | warm points | "
            "served: cold | warm |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    ratios = {order: [] for order in ORDERS}
    served = lambda r: f"{r['verdict'].get('served') or 'nothing'} ({r['verdict'].get('verdict')})"  # noqa: E731
    frm = (lambda r: f" ({r.get('source_key') or 'source'})") if len(srcs) > 1 else (lambda r: "")  # noqa: E731
    for rep in sorted({r["repeat"] for r in rows if r.get("repeat") is not None}):
        cold = by.get(f"cold-r{rep}")
        target = incumbent(cold["search_trials"]) if cold else None
        if target is None:
            continue
        c = reached_at(cold["search_trials"], target)
        head = f"| {rep} | {{}} | {100 * target:.1f} | {c} ({cold['trial_epochs']}) |"
        warms = sorted((r for r in rows if r["key"] == f"warm-r{rep}"), key=lambda r: list(ORDERS).index(warm_order(r)))
        if not warms:
            out.append(head.format("-") + f" {earliest(cold)} | not run | - | - | {served(cold)} | - |")
            continue
        for warm in warms:
            order = warm_order(warm)
            w = reached_at(warm["search_trials"], target)
            ratio = (w / c) if w is not None and c else None
            ratios[order].append(ratio)
            out.append(head.format(ORDERS[order]) + f" {earliest(warm)} | "
                       f"{'not reached' if w is None else w} ({warm['trial_epochs']}) | "
                       f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {len(warm.get('warm_start') or [])}"
                       f"{frm(warm)} | {served(cold)} | {served(warm)} |")
    out += ["", "Warm's earliest possible: the trial-epochs of the baselines that started before the first warm "
                "point, plus one full trial: the soonest a warm point can complete. Run after the baselines, the "
                "goal below cannot be met where it exceeds half the cold figure, unless a baseline itself reaches "
                "the cold incumbent; run first, it can."]
    images = [f"{label(r)} {name} {100 * d['image_se']:.2f} (bound {100 * d['image_se_bound']:.2f})"
              for r in rows for name, d in (r["verdict"].get("comparisons") or {}).items()
              if d.get("image_method") == "paired" and d.get("image_se_bound")]
    if images:
        out += ["", "Test images' standard error of each comparison, paired per image against the independence bound "
                    "(points): " + "; ".join(images) + "."]
    walls = ", ".join(f"{label(r)} {r['wall_s'] / 60:.0f}" for r in rows if r.get("wall_s"))
    out += ["", f"Wall time per search (min, search and confirmation): {walls}."]
    met = {o: f"met in {sum(1 for x in v if x is not None and x <= 0.5)} of {len(v)} repeats" for o, v in ratios.items()}
    present = [o for o in ORDERS if ratios[o]] or [WARM_ORDER]
    goal = "; ".join(("" if present == [WARM_ORDER] else f"warm points {ORDERS[o]}: ") + met[o] for o in present)
    out += ["", f"Goal: warm reaches the cold incumbent in at most half the trial-epochs: {goal} (a repeat where "
                f"warm never reached it counts as missed)."]
    machines = sorted({r.get("machine") or "not recorded" for r in rows})
    out += ["", f"Measured on: {'; '.join(machines)}."]
    return out


def earliest(search: dict) -> int:
    """The fewest trial-epochs in which a sampled trial of ``search`` can complete: the epochs of the
    baselines that started before its first sampled trial (trials in start order) plus one trial's
    full epochs."""
    trials = search["search_trials"]
    first = next((i for i, t in enumerate(trials) if t.get("point") is not None), len(trials))
    base = sum(len(t.get("val_knn") or []) for t in trials[:first])
    full = max((len(t.get("val_knn") or []) for t in trials if t.get("status") == "completed"), default=0)
    return base + full


def command(rows: list[dict]) -> str:
    """The study's command as its rows were run: target, source, repeats run and the shared search options."""
    target = next((r.get("backbone") for r in rows if r.get("repeat") is not None), None)
    source = next((r.get("backbone") for r in rows if r["key"].startswith("source")), None)
    repeats = len({r["repeat"] for r in rows if r.get("repeat") is not None})
    args = next((r.get("search_args") for r in rows if r.get("search_args")), "")
    return " ".join(x for x in ["python bench/bench_quality.py transfer", target and f"--backbone {target}",
                                source and f"--source {source}", f"--repeats {max(1, repeats)}",
                                args and f"--search-args '{args}'"] if x)
