"""What ``recipe-search run`` prints when a search ends (rich tables on the CLI's console):
the search-stage leaderboard with the floor, the confirmation's select and report phases, the
declared comparisons, the verdict line, what is served, and where the MLflow runs are."""

from __future__ import annotations

import math
import os

from rich import box
from rich.console import Console
from rich.table import Table

TABLE = dict(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fits 80 columns


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def print_outcome(o, console: Console, err_console: Console) -> None:
    """What `recipe-search run` prints when a search ends: the stage tables, the verdict, what is served."""
    counts: dict[str, int] = {}
    for t in o.trials:
        key = f"{t.status}{' (confirmation)' if t.stage == 'confirmation' else ''}"
        counts[key] = counts.get(key, 0) + 1
    resumed_time = o.total_wall_s > o.wall_s + 0.5
    earlier = f"{o.total_wall_s:.0f}s with the earlier sessions; this session: " if resumed_time else ""
    console.print(f"search [bold]{o.search_id}[/] {o.status}{' (resumed)' if o.resumed else ''}"
                  f"{f' in the {o.stage} stage' if o.status == 'interrupted' else ''}: "
                  + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                  + f"  in {o.wall_s:.0f}s ({earlier}search {o.search_s:.0f}s, confirmation {o.confirm_s:.0f}s; "
                    f"trials trained {o.trials_train_s:.0f}s)", highlight=False)
    floor_val = (o.floor.get("val") or {}).get("val_knn_top1")
    table = Table(title="search stage (selection on validation: val kNN top-1; no test split read)",
                  title_justify="left", **TABLE)
    for col in ("trial", "kind", "status", "val kNN", "val probe", "note"):
        table.add_column(col, no_wrap=col != "note")
    ranked = sorted((t for t in o.trials if t.stage != "confirmation"),
                    key=lambda t: (t.objective is not None, t.objective or 0), reverse=True)
    for t in ranked:
        style = "bold" if o.best is not None and t.run_id == o.best.run_id else None
        table.add_row(t.trial_id, t.label, t.status, _fmt(t.objective, 3), _fmt(t.metrics.get("val_probe_top1"), 3),
                      (t.error or (f"reused: run {t.reused_from[:8]} of an earlier search" if t.reused_from
                                   else ""))[:80], style=style)
    if floor_val is not None:
        table.add_row("floor", "untrained", "-", _fmt(floor_val, 3),
                      _fmt(o.floor["val"].get("val_probe_top1"), 3), "random-init encoder, same evaluation",
                      style="dim")
    console.print(table)
    if o.selection is not None:
        _print_confirmation(o, console)
    if o.promotion is not None:
        mark = "[green]promoted[/]" if o.promotion.promoted else "[yellow]not promoted[/]"
        console.print(f"{mark}: {o.promotion.reason}", highlight=False)
        current = o.promotion.current
        if current is None:
            console.print(f"nothing is served for {o.backbone}: GET /recipes/{o.backbone} answers 404 with "
                          "this verdict", highlight=False)
        else:
            console.print(f"current recipe for {current.backbone} ({current.dataset}, {current.budget}, "
                          f"fingerprint {getattr(current, 'fingerprint', '?')}):", highlight=False)
            console.print_json(data=current.recipe)
    elif o.promotion_error and o.status != "interrupted":
        err_console.print(f"[bold yellow]{o.promotion_error}[/]", highlight=False)
    console.print(f"MLflow: parent run {o.parent_run_id} in {o.tracking_uri}", highlight=False)
    if o.tracking_uri.startswith(("http://", "https://")):
        console.print(f"  {runs_url(o.tracking_uri, o.tracking_uri, run_id=o.parent_run_id)}", highlight=False)
    else:
        console.print("  browse it with: recipe-search ui", highlight=False)


def _print_confirmation(o, console: Console) -> None:
    """The select phase (val, exploratory), the report phase (test, the declared comparisons) and
    the verdict line."""
    sel, v = o.selection, o.verdict
    table = Table(title=f"confirmation, select phase (seeds {', '.join(map(str, sel.seeds))}; val kNN top-1 "
                        "mean ± std; chooses the winner, exploratory: no test split read)",
                  title_justify="left", **TABLE)
    for col in ("recipe", "role", "val kNN", "chosen"):
        table.add_column(col, overflow="fold")
    roles = {r.name: r.role for r in o.confirmation}
    for name in sel.ranking + sel.incomplete + list(sel.raced_out):
        val = sel.val.get(name)
        mark = "winner" if name == sel.winner else "reference baseline" if name == sel.reference else ""
        text = val.fmt() if val else (f"raced out: {sel.raced_out[name]}" if name in sel.raced_out
                                      else "incomplete (a seed failed)")
        table.add_row(name, roles.get(name, "?"), text, mark, style="bold" if name == sel.winner else None)
    console.print(table)
    if v is None:
        return
    rep = Table(title=f"confirmation, report phase ({len(v.seeds)} fresh seeds, looks at "
                      f"{', '.join(map(str, v.looks))}; test probe top-1 mean ± std)", title_justify="left", **TABLE)
    for col in ("recipe", "test probe", "test kNN", "val kNN"):
        rep.add_column(col, overflow="fold")
    for r in o.report:
        cells = [r.summary(m, v.seeds) for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1")]
        rep.add_row(r.name, *[c.fmt() if c is not None else "-" for c in cells],
                    style="bold green" if r.name == v.served else None)
    rep.add_row("floor", v.floor.fmt(), "-", "-", style="dim")
    console.print(rep)
    comp = Table(title=f"declared comparisons on test probe (Holm across them, valid under the looks; "
                       f"one-sided alpha {v.alpha} each side of a 95% interval)", title_justify="left", **TABLE)
    for col in ("comparison", "lift [95% interval]", "state", "detectable lift", "seeds to show it", "seed SE",
                "image SE"):
        comp.add_column(col, overflow="fold")
    for name, d in v.comparisons.items():
        how = {"paired": " (paired)", "bound": " (bound)"}.get(getattr(d, "image_method", ""), "")
        comp.add_row(name, d.fmt(), d.state, f"{d.mde:+.3f}", _to_show(d), f"{d.seed_se:.3f}",
                     f"{d.image_se:.3f}{how}")
    console.print(comp)
    style = {"better_than_baselines": "bold green", "no_significant_lift": "bold yellow",
             "below_floor": "bold red"}[v.verdict]
    console.print(f"[{style}]{v.line}[/]", highlight=False, soft_wrap=True)


def _to_show(d) -> str:
    """The comparisons table's "seeds to show it": for a lift not shown, the fresh seeds its measured
    mean would take at its spread (80 % power); "-" when shown or not positive."""
    from ..verdict.sequential import REJECTED, SHOW_CAP, seeds_to_show

    if d.state == REJECTED or d.mean <= 0:
        return "-"
    n = seeds_to_show(d)
    return f"> {SHOW_CAP}" if n is None else str(n)


def runs_url(base: str, tracking_uri: str, experiment: str = "recipe-search", run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment's runs (MLflow 3 opens an experiment on its GenAI
    overview; the runs table is ``#/experiments/<id>/runs``), or of one run. ``base`` alone when
    the experiment cannot be looked up."""
    base = base.rstrip("/")
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)  # a server that is down must not hold the command for minutes
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is not None:
            exp_id = client.get_run(run_id).info.experiment_id
            return f"{base}/#/experiments/{exp_id}/runs/{run_id}"
        exp = client.get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a link is a convenience; the store may not exist yet
        return base
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return f"{base}/#/experiments/{exp.experiment_id}/runs" if exp is not None else base
