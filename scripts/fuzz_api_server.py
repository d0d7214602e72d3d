"""The API with search jobs enabled and a stand-in search, for schemathesis' CLI (scripts/fuzz_api.sh).

    python scripts/fuzz_api_server.py sqlite:////path/to/mlflow.db 8765 [--max-jobs N]

The write token is ``fuzz-token``; a job runs ``tests/api_support.py``'s FAKE_RUN (it writes a
search's state file and holds until SIGINT), so fuzzed POST /searches start no training.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tracking_uri")
    ap.add_argument("port", type=int)
    ap.add_argument("--max-jobs", type=int, default=1)
    args = ap.parse_args()
    import uvicorn

    from api.app import create_app
    from api.jobs import JobsConfig

    fake = re.search(r'FAKE_RUN = r"""(.*?)"""', (ROOT / "tests" / "api_support.py").read_text(), re.S).group(1)
    work = Path(tempfile.mkdtemp(prefix="fuzz-api-"))
    home = work / "home"
    home.mkdir()
    os.environ["RECIPE_SEARCH_HOME"] = str(home)
    (work / "fake_run.py").write_text(fake)
    (home / "hold").touch()
    cfg = JobsConfig.from_strings([f"cifar10={work}"], max_trials=6, num_cpus=2, max_jobs=args.max_jobs)
    app = create_app(args.tracking_uri, write_token="fuzz-token", jobs=cfg,
                     search_command=[sys.executable, str(work / "fake_run.py")])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
