"""The ``recipe-search`` command line (typer + rich).

    recipe-search run --backbone mobilenetv3_small_100 --data ../shared/data/cifar10-jpeg.tar.gz --budget smoke
    recipe-search show mobilenetv3_small_100
    recipe-search list
    recipe-search train mobilenetv3_small_100 --epochs 200 --data ../shared/data/cifar10-jpeg.tar.gz
    recipe-search ui
    recipe-search serve --port 8000
    recipe-search report mobilenetv3_small_100 [--out DIR] [--open]

User errors (bad recipe/space/data, unknown backbone, unreachable store) print one
red line and exit with status 2; Ctrl-C exits with 130 after printing how to resume.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import config
from .outcome_view import TABLE, print_outcome, runs_url

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Contrastive pretraining recipe search for lightweight timm backbones.")
# redirected output (a log file, CI) gets 120 columns, so the leaderboards do not fold
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from trainer.errors import TrainerError

    from .errors import SearchError
    from .store import StoreUnavailable

    return (TrainerError, SearchError, StoreUnavailable)


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn user-facing exceptions into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _user_errors() as e:
            fail(str(e))

    return wrapper


# --------------------------------------------------------------------------- run


def _resume_command(backbones: list[str], experiment: str, storage_path: str | None = None) -> str:
    parts = ["recipe-search", "run"]
    for b in backbones:
        parts += ["--backbone", b]
    if experiment != "recipe-search":
        parts += ["--experiment", experiment]
    if storage_path:
        parts += ["--storage-path", storage_path]
    parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def run(backbone: List[str], resume: bool, progress: bool, storage_path: Optional[str], **options) -> None:
    """Search a pretraining recipe per backbone, confirm the finalists on fresh seeds, promote the winner."""
    from . import config
    from .plan import plan, prepare_data
    from .runtime import ray_session
    from .search import run_search
    from .settings import from_cli

    if storage_path is not None:
        os.environ[config.STORAGE_ENV] = str(config.storage_path(storage_path))  # rejects URIs first

    if options["search_id"] is not None and len(backbone) > 1:
        fail("--search-id names one search: give a single --backbone with it")
    all_settings = [from_cli(b, options) for b in backbone]
    experiment = options["experiment"]
    if not resume:
        for s in all_settings:  # every user error before anything starts
            prepare_data(plan(s))
    remaining = list(backbone)
    failed = False
    try:
        with ray_session(options["ray_address"], options["num_cpus"]):
            for s in all_settings:
                console.rule(f"[bold]{s.backbone}[/]")
                outcome = run_search(s, resume=resume, console=console, progress=progress,
                                     on_note=lambda m: console.print(f"[yellow]note:[/] {m}"))
                if outcome.status == "interrupted":
                    print_outcome(outcome, console, err_console)
                    console.print(f"[yellow]interrupted.[/] resume with:\n  "
                                  f"[bold]{_resume_command(remaining, experiment, storage_path)}[/]", soft_wrap=True)
                    raise typer.Exit(EXIT_INTERRUPTED)
                print_outcome(outcome, console, err_console)
                failed |= outcome.promotion is None and outcome.verdict is not None and \
                    outcome.verdict.verdict != "below_floor"  # the store refused a promotion
                remaining.remove(s.backbone)
    except KeyboardInterrupt:
        err_console.print(f"\n[yellow]interrupted.[/] resume with:\n  "
                          f"[bold]{_resume_command(remaining, experiment, storage_path)}[/]", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


def _run_command() -> None:
    """Register ``run``: its own options (backbones, resume, progress, storage path), then one
    option per setting of :mod:`recipe_search.settings` (declared there, once)."""
    import inspect

    from .settings import cli_parameters

    kw = inspect.Parameter.KEYWORD_ONLY
    own = [
        inspect.Parameter("backbone", kw, annotation=List[str], default=typer.Option(
            ..., "--backbone", "-b", help="timm backbone; repeat for several")),
        inspect.Parameter("resume", kw, annotation=bool, default=typer.Option(
            False, "--resume", help="continue the interrupted search of each backbone")),
        inspect.Parameter("progress", kw, annotation=bool, default=typer.Option(
            True, "--progress/--no-progress", help="live trial table")),
        inspect.Parameter("storage_path", kw, annotation=Optional[str], default=typer.Option(
            None, "--storage-path", help="Ray Tune's state and trial checkpoints (default "
                                         "$RECIPE_SEARCH_HOME/ray); on a multi-node cluster a shared "
                                         "filesystem path, the same on every node")),
    ]
    params = own + cli_parameters()

    def command(**kwargs) -> None:
        own_names = {p.name for p in own}
        run(**{k: kwargs[k] for k in own_names}, **{k: v for k, v in kwargs.items() if k not in own_names})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    app.command("run")(user_errors(command))


_run_command()


# --------------------------------------------------------------------------- store views


def _store(tracking_uri: Optional[str], *, create: bool = False):
    from .store import RecipeStore

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
    from .store import sqlite_path

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
    from .report import build_report

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


# --------------------------------------------------------------------------- ui / serve


@app.command()
@user_errors
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: the embedded store)"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(5000),
    experiment: str = typer.Option("recipe-search", help="MLflow experiment of the search runs"),
) -> None:
    """Start the MLflow UI on the same store as the searches."""
    from .store import artifact_root_for

    uri = tracking_uri or config.default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        console.print(f"the store is an MLflow server: open {runs_url(uri, uri, experiment)}", highlight=False)
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    art = artifact_root_for(uri)
    if art:
        cmd += ["--default-artifact-root", art]
    console.print(f"MLflow UI on http://{host}:{port} for {uri}  (Ctrl-C to stop)\n"
                  f"the searches: {runs_url(f'http://{host}:{port}', uri, experiment)}", highlight=False)
    try:
        raise typer.Exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise typer.Exit(0)


@app.command()
@user_errors
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI of the store"),
    data_root: Optional[List[str]] = typer.Option(
        None, "--data-root", metavar="NAME=PATH", help="a dataset search jobs may name (repeatable), e.g. "
                                                      "cifar10=/data/cifar10-jpeg.tar.gz; synthetic is always there"),
    max_jobs: int = typer.Option(1, min=1, help="search jobs running at once (then 429)"),
    max_trials: int = typer.Option(64, min=2, help="most trials a job's search may ask for"),
    job_cpus: Optional[int] = typer.Option(None, min=1, help="--num-cpus of each job's search (default: all)"),
    max_in_flight: int = typer.Option(64, min=0, help="requests handled at once; more get 503 + Retry-After"),
) -> None:
    """Serve the promoted recipes over HTTP (FastAPI); search jobs need $RECIPE_SEARCH_TOKEN."""
    # The api package imports recipe_search (its store), never the reverse: this command
    # becomes `python -m api.server` (exec: the same process, so Ctrl-C and SIGTERM reach
    # uvicorn's graceful shutdown directly, also as a container's PID 1).
    import importlib.util

    spec = importlib.util.find_spec("api")  # found, not imported
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    if not where or not (Path(where[0]) / "server.py").is_file():
        fail("the api package (api/server.py) is not installed beside recipe_search; pip install the project")
    root = str(Path(where[0]).resolve().parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *[p for p in paths if p != root]])}
    cmd = [sys.executable, "-m", "api.server", "--host", host, "--port", str(port)]
    if tracking_uri is not None:
        cmd += ["--tracking-uri", tracking_uri]
    for r in data_root or []:
        cmd += ["--data-root", r]
    cmd += ["--max-jobs", str(max_jobs), "--max-trials", str(max_trials), "--max-in-flight", str(max_in_flight)]
    if job_cpus is not None:
        cmd += ["--job-cpus", str(job_cpus)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)


# --------------------------------------------------------------------------- train


@app.command()
@user_errors
def train(
    backbone: str = typer.Argument(..., help="backbone whose promoted recipe to train"),
    epochs: int = typer.Option(..., min=1, help="pretraining epochs"),
    dataset: Optional[str] = typer.Option(None, help="default: the dataset the recipe was promoted on"),
    data: Optional[str] = typer.Option(None, help="data root (default $RECIPE_SEARCH_DATA)"),
    classes: int = typer.Option(0, help="classes to use (0 = all)"),
    train_per_class: int = typer.Option(0, help="train images per class (0 = all)"),
    val_per_class: int = typer.Option(50, help="train images per class held out for the kNN monitor"),
    test_per_class: int = typer.Option(0, help="test images per class for the probe (0 = all)"),
    batch_size: Optional[int] = typer.Option(None, help="override the recipe's batch size"),
    out: Optional[Path] = typer.Option(None, help="output dir (default $RECIPE_SEARCH_HOME/train/...); "
                                                  "an existing checkpoint there is resumed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (default: torch's)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    experiment: str = typer.Option("recipe-train", help="MLflow experiment of full trainings"),
) -> None:
    """A full pretraining run with the promoted recipe of BACKBONE."""
    from trainer import DataSpec, Recipe
    from trainer.engine import train as train_fn

    from . import records
    from .compose import repair
    from .tracking import Tracker

    rec = _promoted(backbone, dataset, tracking_uri)
    changes = {"epochs": epochs}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    values, notes = repair({**rec.recipe, **changes}, epochs=epochs)
    for n in notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    recipe = Recipe.from_dict(values)
    spec = DataSpec(dataset=dataset or rec.dataset, root=data, classes=classes, train_per_class=train_per_class,
                    val_per_class=val_per_class, test_per_class=test_per_class)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or (config.home() / "train" / f"{backbone}-{stamp}")
    uri = tracking_uri or config.default_tracking_uri()
    tracker = Tracker(uri, experiment)
    run_tags = records.Training(backbone=backbone, dataset=spec.dataset, source_run_id=rec.source_run_id or "",
                                store_run_id=rec.run_id).to_tags()
    run_id = tracker.client.create_run(tracker.experiment_id, run_name=f"train-{backbone}-{stamp}",
                                       tags=run_tags).info.run_id
    tracker.log_params(run_id, recipe.to_dict())
    tracker.log_text(run_id, recipe.to_json(), "recipe.json")
    console.print(f"training {backbone} for {epochs} epochs with the recipe promoted on "
                  f"{rec.dataset}/{rec.budget} (confirmed test probe top-1 {rec.metric:.4f}) -> {out_dir}",
                  highlight=False)

    def on_epoch(r: dict) -> None:
        console.print(f"epoch {r['epoch']}/{r['epochs']}  loss {r['loss']:.4f}  val kNN top-1 "
                      f"{r['val_knn_top1']:.4f}  {r['images_per_sec']:.0f} img/s", highlight=False)
        tracker.log_metrics(run_id, {k: r[k] for k in ("loss", "val_knn_top1", "lr", "images_per_sec") if k in r},
                            step=r["epoch"])

    import torch

    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = train_fn(recipe, spec, out_dir=str(out_dir), device=device, on_epoch=on_epoch, resume=True)
    except KeyboardInterrupt:
        tracker.terminate(run_id, "KILLED")
        err_console.print(f"\n[yellow]interrupted.[/] the last epoch checkpoint is in {out_dir}; continue with "
                          f"--out {shlex.quote(str(out_dir))}")
        raise typer.Exit(EXIT_INTERRUPTED)
    except BaseException:
        tracker.terminate(run_id, "FAILED")
        raise
    finally:
        torch.set_num_threads(saved_threads)
    tracker.log_metrics(run_id, {k: v for k, v in result.metrics.items() if k.startswith(("val_", "test_", "train_"))
                                 or k in ("probe_l2", "epochs_completed")}, step=epochs)
    tracker.set_tags(run_id, records.Training(status=result.status, error=result.error).to_tags())
    tracker.terminate(run_id, "FINISHED" if result.status == "completed" else "FAILED")
    if result.status != "completed":
        fail(f"training {result.status}: {result.error}")
    console.print_json(data={k: v for k, v in result.metrics.items()})
    console.print(f"encoder: {Path(out_dir) / 'encoder.pt'}", highlight=False)


def main() -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
