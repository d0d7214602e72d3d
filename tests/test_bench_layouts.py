"""bench/layouts/nchw/sitecustomize.py: the before-layout of bench/bench_search_wall.py reaches every
process that starts with it on PYTHONPATH (as a Ray worker does), and only those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import trainer.device as d; print(d.CHANNELS_LAST['cpu'], d.CHANNELS_LAST['cuda'])"


def _layout(pythonpath: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*pythonpath, str(ROOT)]))
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip()


def test_the_nchw_layout_turns_channels_last_off_on_the_cpu_only():
    assert _layout([]) == "True True"
    assert _layout([str(ROOT / "bench" / "layouts" / "nchw")]) == "False True"


def test_it_chains_to_the_sitecustomize_it_shadows(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.RS_OTHER_SITE = 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "bench" / "layouts" / "nchw"), str(other),
                                                       str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", PROBE + "; import builtins; print(builtins.RS_OTHER_SITE)"], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert out == ["False", "True", "1"]
