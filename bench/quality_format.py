"""Formatting shared by the pages of docs/results.md (``bench/quality_report.py`` and its sections):
percentages, mean ± std, intervals, rank correlations, and the raw results of a study."""

from __future__ import annotations

import json
import math
from pathlib import Path

from recipe_search.verdict.stats import summary


def _load(results: Path, study: str) -> list[dict]:
    path = results / f"{study.replace('-', '_')}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _ms(values: list[float]) -> str:
    s = summary(values)
    return f"{_pct(s.mean)} ± {_pct(s.std)}"


def _iv(iv) -> str:
    return f"{100 * iv.mean:+.1f} [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]"


def _wall(rows: list[dict]) -> str:
    total = sum(r.get("wall_s", 0) for r in rows)
    return f"{total / 60:.0f} CPU-thread-minutes of training" if total else "n/a"


def _corr(c: dict) -> str:
    return (f"Spearman {c['spearman']:+.2f} [{c['spearman_ci'][0]:+.2f}, {c['spearman_ci'][1]:+.2f}], "
            f"Kendall {c['kendall']:+.2f} [{c['kendall_ci'][0]:+.2f}, {c['kendall_ci'][1]:+.2f}] (n = {c['n']})")
