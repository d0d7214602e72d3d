"""The commands that read the recipe store and the searches: ``show``, ``list``, ``export`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import config
from .base import app, console, err_console, fail, user_errors
from .outcome_view import TABLE


def _store(tracking_uri: Optional[str], *, create: bool = False):
    from ..store import RecipeStore

    return RecipeStore(tracking_uri or config.default_tracking_uri(), create=create)


def _record_dict(rec) -> dict:
    verdict = rec.provenance.get("verdict") if isinstance(rec.provenance.get("verdict"), dict) else {}
    return {"backbone": rec.backbone, "dataset": rec.dataset, "fingerprint": rec.fingerprint,
            "budget": rec.budget, "verdict": rec.verdict, "verdict_line": rec.verdict_line,
            "test_probe_top1": rec.score.to_dict(), "seeds": verdict.get("seeds"),
            "recipe": rec.recipe, "metrics": rec.metrics, "provenance": rec.provenance,
            "store_run_id": rec.run_id, "source_run_id": rec.source_run_id, "updated_at": rec.updated_at}


def _describe_rec(rec) -> str:
    return (f"{rec.dataset} fingerprint {rec.fingerprint} (budget {rec.budget or '-'}, "
            f"{rec.verdict or 'no verdict'}, test_probe_top1 {rec.score.fmt(3)}, promoted {rec.updated_at[:19]})")


def _promoted(backbone: str, dataset: Optional[str], tracking_uri: Optional[str],
              fingerprint: Optional[str] = None):
    """The current recipe of ``backbone`` (newest, unless ``dataset``/``fingerprint`` pick one;
    ``fingerprint`` may be a unique prefix). Says on stderr which other fingerprints exist."""
    from trainer.recipe import check_backbone

    check_backbone(backbone)  # an unknown name gets "close matches"
    store = _store(tracking_uri)
    recs = store.fingerprints(backbone, dataset)
    where = f" on {dataset}" if dataset else ""
    if not recs:
        held = store.withheld(backbone)
        if held is not None:  # searched, and the evidence supported no recipe
            fail(f"no recipe is served for {backbone}: its last search ({held.provenance.get('search_id', '?')}) "
                 f"ended {held.verdict}: {held.provenance.get('withheld_because') or 'nothing clears the floor'}")
        fail(f"no promoted recipe for {backbone}{where}; run `recipe-search run --backbone {backbone}` first")
    if fingerprint is not None:
        fp = fingerprint.strip().lower()
        hits = [r for r in recs if r.fingerprint.startswith(fp)] if fp else []
        if len(hits) != 1:
            have = ", ".join(f"{r.fingerprint} ({r.dataset})" for r in recs)
            what = "matches several recipes" if hits else "matches no recipe"
            fail(f"fingerprint {fingerprint!r} {what} of {backbone}{where}; current fingerprints: {have}")
        return hits[0]
    rec, others = recs[0], recs[1:]
    if others:
        err_console.print(
            f"[yellow]note:[/] {backbone} has {len(recs)} current recipes; showing the newest, "
            f"{_describe_rec(rec)}. Others: " + "; ".join(_describe_rec(r) for r in others)
            + ". Pick one with --fingerprint F (a unique prefix is enough) or --dataset D.",
            highlight=False, soft_wrap=True)
    return rec


@app.command()
@user_errors
def show(
    backbone: str = typer.Argument(..., help="backbone whose promoted recipe to print"),
    dataset: Optional[str] = typer.Option(None, help="narrow to one dataset"),
    fingerprint: Optional[str] = typer.Option(None, help="pick the recipe of this fingerprint (or a unique prefix)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI of the store"),
) -> None:
    """Print the promoted recipe of BACKBONE as JSON: verdict, confirmed score, recipe, provenance.

    The verdict line also goes to stderr, so stdout stays plain JSON."""
    rec = _promoted(backbone, dataset, tracking_uri, fingerprint)
    err_console.print(f"[bold]{rec.backbone}[/] on {_describe_rec(rec)}", highlight=False, soft_wrap=True)
    if rec.verdict_line:
        err_console.print(f"verdict: {rec.verdict_line}", highlight=False, soft_wrap=True)
    text = json.dumps(_record_dict(rec), indent=2, default=str)
    if console.is_terminal:
        console.print_json(text)
    else:
        print(text)


@app.command("list")
@user_errors
def list_(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI of the store"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the promoted recipes (one per backbone, dataset and fingerprint)."""
    from ..config import sqlite_path

    uri = tracking_uri or config.default_tracking_uri()
    db = sqlite_path(uri)
    recs = [] if db is not None and not db.exists() else _store(uri).list()
    if json_out:
        print(json.dumps([_record_dict(r) for r in recs], indent=2, default=str))
        return
    if not recs:
        console.print("no promoted recipes yet; run `recipe-search run --backbone NAME`")
        return
    def table_of(fp_len: int) -> Table:
        table = Table(title="promoted recipes (test probe = confirmed linear-probe top-1 on the test split, "
                            "mean ± std over the seeds)", title_justify="left", **TABLE)
        for col in ("backbone", "dataset", "fingerprint", "budget", "verdict", "test probe", "promoted"):
            # the key columns and the score never wrap; the others wrap in a narrow terminal
            table.add_column(col, no_wrap=col in ("backbone", "fingerprint", "test probe", "promoted"))
        for r in recs:
            table.add_row(r.backbone, r.dataset, r.fingerprint[:fp_len], r.budget or "-", r.verdict or "-",
                          r.score.fmt(3), r.updated_at[:10])
        return table

    # a pipe gets whole rows (rich would squeeze them into 80 columns); a narrow terminal
    # gets 8-hex fingerprint prefixes (`show --fingerprint` takes a unique prefix)
    out = console if console.is_terminal else Console(width=200, highlight=False)
    table = table_of(16)
    if Console(width=1000).measure(table).maximum > out.width:
        table = table_of(8)
    out.print(table)


@app.command()
@user_errors
def export(
    dataset: str = typer.Argument(..., help="the dataset whose results to write (as `run --dataset` names it)"),
    out: Optional[Path] = typer.Option(None, help="the file to write (default: stdout)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI of the store"),
) -> None:
    """Write what the store knows on DATASET (its served recipes and finished search trials) as a JSON
    results file, for `recipe-search run --warm-start-file FILE` in another store."""
    from .. import known_results
    from ..config import sqlite_path
    from ..study_storage import redact_url

    uri = tracking_uri or config.default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        fail(f"no store at {uri} (nothing was searched there yet); pass --tracking-uri to name one")
    known = known_results.from_store(_store(uri), dataset)
    if out is None:
        print(json.dumps(known.to_dict(redact_url(uri)), indent=1))
    else:
        known_results.write(known, out, source=redact_url(uri))
    where = f" on {dataset}"
    err_console.print(f"{len(known.served)} served recipe(s) and {len(known.trials)} finished trial(s){where}"
                      + (f" written to {out}" if out else ""), highlight=False, soft_wrap=True)
    if not known.served and not known.trials:
        err_console.print(f"[yellow]note:[/] the store holds no results{where}; `run --warm-start-file` refuses "
                          "a file with nothing in it", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- report


@app.command()
@user_errors
def report(
    target: str = typer.Argument(..., metavar="SEARCH_ID|BACKBONE",
                                 help="a search id, or a backbone (its newest finished search)"),
    out: Optional[Path] = typer.Option(None, help="output dir (default $RECIPE_SEARCH_HOME/reports/<search id>)"),
    open_: bool = typer.Option(False, "--open", help="open the page in a web browser"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI of the searches"),
    experiment: str = typer.Option("recipe-search", help="MLflow experiment of the search runs"),
) -> None:
    """Write a search's report: one self-contained HTML page (verdict, confirmation leaderboard,
    lift intervals, floor, learning curves, best so far, parameter importances, the promoted
    recipe and how to reproduce it) plus its plots as PNG files."""
    from ..report import build_report

    uri = tracking_uri or config.default_tracking_uri()
    rep = build_report(uri, target, experiment)
    rec = rep.record
    out_dir = out or (config.home() / "reports" / rep.search_id)
    page = rep.write(out_dir)
    if rec.search_id != target:
        err_console.print(f"[yellow]note:[/] {target}: its newest search, {rec.search_id}", highlight=False)
    promoted = rec.promoted
    if promoted is None and rec.current is not None:
        err_console.print(f"[yellow]note:[/] the current recipe of {rec.backbone} comes from search "
                          f"{rec.current.provenance.get('search_id')}: recipe-search report "
                          f"{rec.current.provenance.get('search_id')}", highlight=False, soft_wrap=True)
    console.print(f"report of search {rec.search_id} ({rec.search.verdict or 'no verdict'}): {page}  "
                  f"({len(rep.images)} plots beside it; {rep.seconds:.1f}s)", highlight=False, soft_wrap=True)
    if open_:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            err_console.print(f"[yellow]note:[/] no web browser found; open {page.resolve().as_uri()}",
                              highlight=False)
