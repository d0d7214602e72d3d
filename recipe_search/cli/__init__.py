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
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import config
from . import run as cli_run, store as cli_store  # noqa: F401 - they register run, show, list and report on the app
from .base import EXIT_INTERRUPTED, EXIT_USER_ERROR, app, console, err_console, fail, user_errors  # noqa: F401
from .store import _promoted
from .outcome_view import runs_url  # noqa: F401 - re-exported

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
    from ..config import artifact_root_for

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

    from .. import records
    from ..compose import repair
    from ..tracking import Tracker

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
