"""Search jobs started over the API: a typed request, persisted, run one at a time.

A job is one typed request (:func:`request_model`: backbones, budget, a dataset by the
name of a data root the *operator* configured, a space by name, the number of trials
capped by the operator, a seed) turned into ``recipe-search run`` command lines built
here -- the caller never supplies a path or an argument. A job with several backbones
runs one search per backbone, one after the other, each with its own search id
(``<backbone>-<job id>``), so each can be resumed with ``--resume --search-id``.

:class:`JobManager` keeps the jobs in ``<config.home()>/api-jobs.json`` (atomic
rewrites), starts at most ``max_jobs`` at once, cancels a job the way Ctrl-C does
(SIGINT to the search's process group: the search stops cleanly and is resumable),
and on start-up marks the jobs a previous server left running as ``interrupted``
(a search process that outlived the server is sent SIGINT first). Nothing is re-run
without a ``resume`` request, and a resume continues each search from its saved
state (``--resume --search-id``), so no trial and no MLflow run is duplicated.

Job states: ``running`` -> ``stopping`` (SIGINT sent) -> ``cancelled``; ``running`` ->
``finished`` | ``failed``; ``interrupted`` (the server stopped while it ran).
``cancelled``, ``interrupted`` and ``failed`` jobs can be resumed. :meth:`JobManager.delete`
cancels a job as well and takes it off the server's list (``GET`` answers 404 from then on);
its MLflow runs and its searches' saved state stay, so each search can still be continued
from the command line (``recipe-search run --resume --search-id``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from pydantic import BaseModel

from recipe_search import config
from recipe_search.settings import SearchSettings

from .job_log import server_redactor
from .job_process import alive, interrupt, last_error, now, read_search_meta, run_prefix, search_progress
from .job_request import DataRoot, JobError, JobsConfig, parse_data_root, request_model

__all__ = ["JobManager", "JobError", "JobsConfig", "DataRoot", "parse_data_root", "request_model",
           "search_progress", "ACTIVE", "RESUMABLE"]

JOBS_FILE = "api-jobs.json"
LOG_DIR = "api-searches"
ACTIVE = ("running", "stopping")
RESUMABLE = ("cancelled", "interrupted", "failed")
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------- the manager


class JobManager:
    """Starts, tracks, cancels and resumes search jobs; one JSON file holds them all."""

    def __init__(self, cfg: JobsConfig, tracking_uri: str, home: Path | None = None) -> None:
        self.cfg = cfg
        self.tracking_uri = tracking_uri
        self.home = (home or config.home()).resolve()
        self.path = self.home / JOBS_FILE
        self.log_dir = self.home / LOG_DIR
        self.redact = server_redactor(self.home, cfg.data_roots, tracking_uri)  # what a client may read
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._closing = False
        self._jobs: dict[str, dict] = self._load()
        self.recovered = self._recover()

    # -- persistence ----------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            # a damaged file is kept aside, never silently overwritten
            aside = self.path.with_name(f"{JOBS_FILE}.damaged-{now().replace(':', '')}")
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            print(f"recipe-search api: {self.path} unreadable ({e}); moved to {aside}", file=sys.stderr)
            return {}
        return {j["id"]: j for j in data.get("jobs", []) if isinstance(j, dict) and "id" in j}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{JOBS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "jobs": list(self._jobs.values())}, indent=1))
        os.replace(tmp, self.path)

    def _recover(self) -> list[str]:
        """Jobs a previous server left running: SIGINT a surviving search, mark them interrupted."""
        out = []
        with self._lock:
            for job in self._jobs.values():
                if job["state"] not in ACTIVE:
                    continue
                pid = job.get("pid")
                current = next((s for s in job["searches"] if s["state"] == "running"), None)
                marker = current["search_id"] if current else None
                note = "the server stopped while this job ran"
                if alive(pid, marker):
                    interrupt(pid)
                    note += f"; its search (pid {pid}) was sent SIGINT"
                for s in job["searches"]:
                    if s["state"] == "running":
                        s["state"] = "interrupted"
                job.update(state="interrupted", updated_at=now(), message=f"{note}; resume it with "
                           f"POST /searches/{job['id']}/resume")
                out.append(job["id"])
            if out:
                self._save()
        return out

    # -- queries --------------------------------------------------------------------
    def list(self) -> list[dict]:
        with self._lock:
            return [json.loads(json.dumps(j)) for j in sorted(self._jobs.values(), key=lambda j: j["created_at"],
                                                                 reverse=True) if not j.get("deleted_at")]

    def _job(self, job_id: str) -> dict:
        """The job ``job_id`` (404 when there is none or it was deleted)."""
        job = self._jobs.get(job_id)
        if job is None or job.get("deleted_at"):
            raise JobError(404, f"no search job {job_id!r} (GET /searches lists them)")
        return job

    def get(self, job_id: str) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._job(job_id)))

    def log_file(self, job_id: str) -> Path:
        """Where the job's processes write (served as ``GET /searches/{id}/log``, never named)."""
        with self._lock:
            job = self._job(job_id)
            return Path(job.get("log") or self.log_dir / f"{job_id}.log")

    def running(self, job_id: str) -> bool:
        """Whether ``job_id`` still runs (its log may grow)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job is not None and job["state"] in ACTIVE

    def active(self) -> list[str]:
        with self._lock:
            return [j["id"] for j in self._jobs.values() if j["state"] in ACTIVE]

    # -- commands -------------------------------------------------------------------
    def _check_capacity(self) -> None:
        running = self.active()
        if len(running) >= self.cfg.max_jobs:
            raise JobError(429, f"{len(running)} search job(s) already running ({', '.join(running)}); this "
                                f"server runs at most {self.cfg.max_jobs} at once (--max-jobs): retry later or "
                                "cancel one with POST /searches/{id}/cancel", retry_after=self.cfg.retry_after)

    def submit(self, request: BaseModel) -> dict:
        req = request.model_dump()
        root = self.cfg.data_roots[req["dataset"]]
        from recipe_search.budget import BUDGETS

        budget = BUDGETS[req["budget"]]
        trials = req.get("trials") or min(budget.num_samples, self.cfg.max_trials)
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            if self._closing:
                raise JobError(503, "the server is shutting down", retry_after=5)
            self._check_capacity()
            created = now()
            job = {
                "id": job_id, "state": "running", "created_at": created, "updated_at": created,
                "request": req, "trials": trials, "dataset_kind": root.kind,
                "searches": [{"backbone": b, "search_id": f"{b}-{job_id}", "state": "pending", "returncode": None}
                             for b in req["backbones"]],
                "pid": None, "runs": 0, "cancel_requested": False, "message": None, "error": None,
                "log": str(self.log_dir / f"{job_id}.log"),
            }
            self._jobs[job_id] = job
            self._save()
            self._launch(job_id)
            return json.loads(json.dumps(job))

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            job = self._job(job_id)
            if job["state"] == "finished":
                raise JobError(409, f"search job {job_id} has finished: nothing to cancel")
            if job["state"] in ACTIVE:
                job["cancel_requested"] = True
                if job["state"] == "running":
                    job.update(state="stopping", updated_at=now(),
                               message="SIGINT sent (Ctrl-C): the search saves its state and stops")
                    proc = self._procs.get(job_id)
                    if proc is not None and proc.poll() is None:
                        interrupt(proc.pid)
                self._save()
            return json.loads(json.dumps(job))

    def delete(self, job_id: str) -> dict:
        """Cancel ``job_id`` if it runs (SIGINT) and take it off the list; its job as it was left."""
        with self._lock:
            job = self._job(job_id)
            if job["state"] == "running":
                self.cancel(job_id)
            unfinished = [s["search_id"] for s in job["searches"] if s["state"] != "finished"]
            how = (f"; continue its searches with `recipe-search run --resume --search-id ID` "
                   f"(ID: {', '.join(unfinished)})" if unfinished else "")
            job.update(deleted_at=now(), updated_at=now(),
                       message=f"deleted: off this server's list; its MLflow runs stay{how}")
            self._save()
            return json.loads(json.dumps(job))

    def resume(self, job_id: str) -> dict:
        with self._lock:
            job = self._job(job_id)
            if job["state"] == "stopping" or (job["state"] in RESUMABLE and alive(job.get("pid"), job["id"])):
                raise JobError(409, f"search job {job_id} is still stopping; resume it once it has stopped",
                               retry_after=5)
            if job["state"] not in RESUMABLE:
                raise JobError(409, f"search job {job_id} is {job['state']}: only "
                                    f"{', '.join(RESUMABLE)} jobs can be resumed")
            if self._closing:
                raise JobError(503, "the server is shutting down", retry_after=5)
            self._check_capacity()
            job.update(state="running", cancel_requested=False, error=None, updated_at=now(),
                       message="resumed: each unfinished search continues from its saved state")
            self._save()
            self._launch(job_id)
            return json.loads(json.dumps(job))

    def shutdown(self) -> None:
        """The server stops: running searches get SIGINT and their jobs become ``interrupted``."""
        with self._lock:
            self._closing = True
            changed = False
            for job in self._jobs.values():
                if job["state"] not in ACTIVE:
                    continue
                proc = self._procs.get(job["id"])
                if proc is not None and proc.poll() is None:
                    interrupt(proc.pid)
                for s in job["searches"]:
                    if s["state"] == "running":
                        s["state"] = "interrupted"
                job.update(state="interrupted" if not job.get("cancel_requested") else "cancelled",
                           updated_at=now(),
                           message=f"the server stopped; resume with POST /searches/{job['id']}/resume")
                changed = True
            if changed:
                self._save()

    # -- running --------------------------------------------------------------------
    def command(self, job: dict, search: dict) -> list[str]:
        """The ``recipe-search run`` command line of one search of ``job`` (never caller text)."""
        req = job["request"]
        prefix = list(self.cfg.command or run_prefix())
        sid = search["search_id"]
        base = SearchSettings(backbone=search["backbone"], search_id=sid, tracking_uri=self.tracking_uri,
                              num_cpus=self.cfg.num_cpus or None)
        if read_search_meta(sid) is not None:  # it has started before: continue it from its saved state
            return [*prefix, *base.to_argv(), "--resume"]
        root = self.cfg.data_roots.get(req["dataset"])
        if root is None:
            raise JobError(409, f"data root {req['dataset']!r} is no longer configured on this server")
        space = None
        if req.get("space"):
            from recipe_search.space import spaces_dir

            space = str((spaces_dir() / f"{req['space']}.yaml").resolve())
        settings = dataclasses.replace(base, budget=req["budget"], dataset=root.kind, data=root.path, space=space,
                                       num_samples=job["trials"], seed=req["seed"])
        return [*prefix, *settings.to_argv()]

    def _launch(self, job_id: str) -> None:
        t = threading.Thread(target=self._run, args=(job_id,), name=f"search-job-{job_id}", daemon=True)
        self._threads[job_id] = t
        t.start()

    def _run(self, job_id: str) -> None:
        try:
            self._run_searches(job_id)
        except Exception as e:  # noqa: BLE001 - a job must never stay 'running' for nothing
            with self._lock:
                job = self._jobs[job_id]
                if job["state"] in ACTIVE:
                    job.update(state="failed", error=f"{type(e).__name__}: {e}", updated_at=now())
                    self._save()

    def _run_searches(self, job_id: str) -> None:
        env = dict(os.environ)
        env.pop("RECIPE_SEARCH_TOKEN", None)
        env.pop("MLFLOW_TRACKING_URI", None)  # --tracking-uri says it
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            searches = list(self._jobs[job_id]["searches"])
        for i in range(len(searches)):
            with self._lock:
                job = self._jobs[job_id]
                search = job["searches"][i]
                if search["state"] == "finished":
                    continue
                meta = read_search_meta(search["search_id"])
                if meta is not None and meta.get("status") == "finished":
                    search.update(state="finished", returncode=0)  # it had finished before a crash
                    self._save()
                    continue
                if job["cancel_requested"] or self._closing or job["state"] != "running":
                    return self._stopped(job_id, None)
                cmd = self.command(job, search)
                log = open(job["log"], "ab")
                try:
                    log.write(f"\n=== {now()} $ {' '.join(cmd)}\n".encode())
                    log.flush()
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=self.home, start_new_session=True)
                finally:
                    log.close()
                self._procs[job_id] = proc
                search.update(state="running", returncode=None)
                job.update(pid=proc.pid, runs=job.get("runs", 0) + 1, updated_at=now())
                self._save()
            rc = proc.wait()
            with self._lock:
                job = self._jobs[job_id]
                search = job["searches"][i]
                self._procs.pop(job_id, None)
                search["returncode"] = rc
                if rc == 0:
                    search["state"] = "finished"
                    job["updated_at"] = now()
                    self._save()
                    continue
                if job["cancel_requested"] or self._closing or rc in (EXIT_INTERRUPTED, -signal.SIGINT):
                    search["state"] = "interrupted"
                    return self._stopped(job_id, rc)
                search["state"] = "failed"
                job.update(state="failed", updated_at=now(),
                           error=f"{search['backbone']}: recipe-search run exited with status {rc}: "
                                 f"{last_error(Path(job['log'])) or 'see the log'}",
                           message=f"see GET /searches/{job_id}/log; resume with POST /searches/{job_id}/resume")
                self._save()
                return None
        with self._lock:
            job = self._jobs[job_id]
            if job["state"] in ACTIVE:
                job.update(state="finished", updated_at=now(), message=None)
                self._save()
        return None

    def _stopped(self, job_id: str, rc: int | None) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if job["state"] not in ACTIVE:
                return  # shutdown() already recorded it
            state = "cancelled" if job["cancel_requested"] else "interrupted"
            job.update(state=state, updated_at=now(),
                       message=f"{state}; resume with POST /searches/{job_id}/resume (each search continues "
                               "with --resume --search-id)")
            self._save()

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        """Wait for the job's runner thread (tests)."""
        t = self._threads.get(job_id)
        if t is not None:
            t.join(timeout)
