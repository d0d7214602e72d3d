"""Throwaway services for the integration test and bench/bench_tracking.py: a PostgreSQL
cluster (initdb + pg_ctl on a loopback port), an MLflow tracking server, a Ray head node and
the recipe-search API. Each ``start_*`` returns an object with ``stop()``; everything lives
under one temp root and every process it starts is tracked, so ``leftovers()`` can prove that
nothing survives teardown. Linux only (/proc). Never uses ``ray stop`` or name-based kills:
other Ray clusters on the machine are not touched.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """Newest /usr/lib/postgresql/<v>/bin holding initdb (Debian layout), else initdb on PATH."""
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if cands:
        return Path(cands[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


# --------------------------------------------------------------------------- processes (/proc)


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in ticks) or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return int(rest[1]), rest[0], int(rest[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        st = _proc_stat(p)
        if st:
            children.setdefault(st[0], []).append(p)
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int, start: int | None = None) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[1] not in ("Z", "X") and (start is None or st[2] == start)


@dataclass
class ProcessTracker:
    """Every pid we started (and their descendants, sampled), with start times against pid reuse;
    plus a marker (our temp root) searched for in all command lines."""

    marker: str
    seen: dict[int, int] = field(default_factory=dict)

    def add(self, pid: int) -> None:
        for p in {pid, *descendants(pid)}:
            st = _proc_stat(p)
            if st:
                self.seen.setdefault(p, st[2])

    def sample(self) -> None:
        for p in list(self.seen):
            if alive(p, self.seen[p]):
                self.add(p)
        for p in _all_pids():
            if p != os.getpid() and self.marker in _proc_cmdline(p):
                st = _proc_stat(p)
                if st and st[1] not in ("Z", "X"):
                    self.seen.setdefault(p, st[2])

    def leftovers(self) -> list[str]:
        out = [f"{p}: {_proc_cmdline(p)[:160]}" for p, t in self.seen.items() if alive(p, t)]
        for p in _all_pids():
            if p != os.getpid() and p not in self.seen and self.marker in _proc_cmdline(p) and alive(p):
                out.append(f"{p}: {_proc_cmdline(p)[:160]}")
        return out

    def kill_all(self) -> None:
        """SIGKILL whatever we started that is still alive (last resort, by pid only)."""
        for p, t in self.seen.items():
            if alive(p, t):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


def _terminate(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group of a service started with start_new_session, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the rest of the group (workers)
    except OSError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} not up after {timeout}s: {last}\n{tail}")


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    bindir: Path
    root: Path
    port: int
    user: str = "rs"
    run_as: str | None = None  # system user running the server (initdb refuses root)

    def url(self, db: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{db}"

    def _cmd(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self.run_as:
            args = ["runuser", "-u", self.run_as, "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, cwd=self.root, **kw)

    def psql(self, db: str, sql: str) -> list[list[str]]:
        out = subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                              "-d", db, "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", sql],
                             check=True, capture_output=True, text=True)
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def createdb(self, name: str) -> None:
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        name], check=True, capture_output=True, text=True)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._cmd([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                           "-t", "30", "stop"])
            except subprocess.CalledProcessError:
                pid = self.postmaster_pid()
                if pid:
                    try:
                        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                    except OSError:
                        pass


def start_postgres(root: Path, tracker: ProcessTracker | None = None) -> Postgres:
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL not installed (apt-get install -y postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    run_as = None
    if os.geteuid() == 0:  # initdb/postgres refuse to run as root
        run_as = "postgres"
        pw = pwd.getpwnam(run_as)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700)
    pg = Postgres(bindir=bindir, root=root, port=free_port(), run_as=run_as)
    pg._cmd([str(bindir / "initdb"), "-D", str(root / "data"), "-U", pg.user, "--auth=trust", "-E", "UTF8",
             "--no-locale", "--no-sync"])
    opts = (f"-p {pg.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off")
    pg._cmd([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-o", opts, "-l", str(root / "postgres.log"),
             "-w", "-t", "60", "start"])
    if tracker is not None and pg.postmaster_pid():
        tracker.add(pg.postmaster_pid())
    return pg


# --------------------------------------------------------------------------- servers


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    port: int
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _terminate(self.proc)


def _spawn(name: str, args: list[str], log: Path, env: dict | None = None,
           tracker: ProcessTracker | None = None) -> subprocess.Popen:
    fh = open(log, "ab")
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True, cwd=REPO)
    fh.close()
    if tracker is not None:
        tracker.add(proc.pid)
    return proc


def start_mlflow(backend_uri: str, root: Path, tracker: ProcessTracker | None = None, timeout: float = 120,
                 workers: int = 1) -> Service:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "mlflow-server.log"
    proc = _spawn("mlflow", [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers)], log,
                  env={"MLFLOW_LOGGING_LEVEL": "WARNING"}, tracker=tracker)
    svc = Service("mlflow", proc, log, port)
    wait_http(f"{svc.url}/health", timeout, proc, log)
    if tracker is not None:
        tracker.add(proc.pid)
    return svc


def start_ray_head(root: Path, num_cpus: int = 2, env: dict | None = None,
                   tracker: ProcessTracker | None = None, timeout: float = 120) -> Service:
    """``ray start --head --block`` in its own session and temp dir (on the node IP: Ray maps a
    127.0.0.1 address to it when joining) (stopped by signalling it,
    which makes Ray kill its node processes; ``ray stop`` would kill every Ray on the machine)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "ray-head.log"
    temp_dir = root / "t"  # keep ``root`` short: AF_UNIX socket paths must stay <= 107 bytes
    temp_dir.mkdir(exist_ok=True)
    proc = _spawn("ray", [str(VENV_BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", str(num_cpus),
                          "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp_dir),
                          "--block"], log,
                  env={"RAY_USAGE_STATS_ENABLED": "0", **(env or {})}, tracker=tracker)
    svc = Service("ray", proc, log, port, extra={"temp_dir": temp_dir})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        raise TimeoutError(f"Ray GCS not up on port {port}\n{log.read_text()[-3000:]}")
    time.sleep(2)  # raylet registers after the GCS
    if tracker is not None:
        tracker.add(proc.pid)
    return svc


def start_ray_worker(head: Service, num_cpus: int = 1, env: dict | None = None,
                     tracker: ProcessTracker | None = None, timeout: float = 120) -> Service:
    """A second Ray node on this machine, joined to ``head`` (``ray start --address ... --block``):
    trials are then scheduled across two raylets, as on a real cluster. It shares the head's
    session directory, so :func:`stop_ray_head` also finds its processes."""
    root = Path(head.extra["temp_dir"]).parent
    log = root / "ray-worker.log"
    proc = _spawn("ray-worker", [str(VENV_BIN / "ray"), "start", "--address", f"127.0.0.1:{head.port}",
                                 "--num-cpus", str(num_cpus), "--disable-usage-stats", "--block"], log,
                  env={"RAY_USAGE_STATS_ENABLED": "0", **(env or {})}, tracker=tracker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --address exited with {proc.returncode}\n{log.read_text()[-3000:]}")
        if "block forever" in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"the Ray worker node did not start\n{log.read_text()[-3000:]}")
    if tracker is not None:
        tracker.add(proc.pid)
    return Service("ray-worker", proc, log, head.port, extra={"temp_dir": head.extra["temp_dir"]})


def stop_ray_worker(svc: Service, tracker: ProcessTracker | None = None) -> None:
    """Stop a ``ray start --block`` node: SIGTERM makes Ray shut its node processes down."""
    if tracker is not None:
        tracker.add(svc.proc.pid)
        tracker.sample()
    if svc.proc.poll() is None:
        svc.proc.send_signal(signal.SIGTERM)
        try:
            svc.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    _terminate(svc.proc, timeout=5)


def stop_ray_head(svc: Service, tracker: ProcessTracker | None = None) -> None:
    stop_ray_worker(svc, tracker)  # the same ``ray start --block`` stop, then the leftovers
    if tracker is not None:  # node processes that escaped the group (raylet workers, gcs)
        deadline = time.monotonic() + 10
        temp_dir = str(svc.extra["temp_dir"])
        while time.monotonic() < deadline:
            left = [p for p, t in tracker.seen.items() if alive(p, t)
                    and (temp_dir in _proc_cmdline(p) or "ray" in _proc_cmdline(p))]
            if not left:
                break
            time.sleep(0.5)
        for p, t in tracker.seen.items():
            if alive(p, t) and temp_dir in _proc_cmdline(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
    shutil.rmtree(svc.extra["temp_dir"], ignore_errors=True)


def start_api(tracking_uri: str, root: Path, tracker: ProcessTracker | None = None, timeout: float = 60) -> Service:
    port = free_port()
    log = root / "api.log"
    proc = _spawn("api", [str(VENV_BIN / "recipe-search"), "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--tracking-uri", tracking_uri], log, tracker=tracker)
    svc = Service("api", proc, log, port)
    wait_http(f"{svc.url}/healthz", timeout, proc, log)
    return svc
