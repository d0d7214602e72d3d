"""The report's HTML page: one self-contained file (inline CSS, every plot an ``<img>`` with a
base64 PNG ``data:`` URI; no script, no request to anywhere), from a ``report.SearchRecord``.

Sections (each a ``<section id=...>``): ``verdict``, ``confirmation`` (leaderboard, mean ± std
over the seeds), ``lift`` (paired intervals over each baseline and the floor), ``floor``,
``search`` (the search-stage leaderboard, val only), ``curves``, ``best-so-far``, ``importance``
(importances and slice plot), ``recipe`` (the promoted recipe, provenance, data fingerprint) and
``reproduce`` (the commands).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import shlex
from typing import Any

from ..verdict import RecipeRuns

METRICS = (("val_knn_top1", "val kNN"), ("test_probe_top1", "test probe"), ("test_knn_top1", "test kNN"))
FULL_EPOCHS = 200  # the full-length pretraining the reproduce section suggests (MoCo's CIFAR-10 demo)
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
.meta{color:#555}.verdict{font-size:1.05em;padding:.7em 1em;border-radius:6px;background:#f3f3f3}
.better_than_baselines{background:#e3f6e5}.no_significant_lift{background:#fff6d6}.below_floor{background:#fde4e4}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{padding:.25em .7em;border-bottom:1px solid #e5e5e5;text-align:left}
th{background:#fafafa}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.win td{font-weight:600;background:#eef8ee}
tr.dim td{color:#777}pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.88em}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}.note{color:#8a5a00}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _table(head: list[str], rows: list[tuple[list[str], str]], numeric: set[int] = frozenset()) -> str:
    """A table; each row is ``(cells already escaped, css class)``."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(f"<tr class='{cls}'>" + "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>"
                                                    for i, c in enumerate(cells)) + "</tr>" for cells, cls in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(images: dict[str, bytes], name: str, alt: str, caption: str) -> str:
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{esc(alt)}' data-file='{esc(name)}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{esc(title)}</h2>{body}</section>"


# --------------------------------------------------------------------------- sections


def confirmation_runs(rec, phase: str | None = None) -> list[RecipeRuns]:
    """The confirmation trials grouped per recipe (completed seeds only; of ``phase`` only when given)."""
    by: dict[str, RecipeRuns] = {}
    for t in rec.trials:
        if t.stage != "confirmation" or not t.job or (phase is not None and t.phase != phase):
            continue
        r = by.setdefault(t.job, RecipeRuns(t.job, "baseline" if t.baseline else "finalist", t.recipe or {}))
        if t.status == "completed" and t.seed is not None:
            r.runs[t.seed] = dict(t.metrics)
    return list(by.values())


def _confirmation(rec) -> str:
    v = rec.verdict or {}
    select, report = confirmation_runs(rec, "select"), confirmation_runs(rec, "report")
    if not select and not report:
        return "<p>No confirmation stage ran (the search was interrupted before it, or no trial completed).</p>"
    sel = v.get("selection") or {}
    seeds = sel.get("seeds") or sorted({s for r in select for s in r.runs})
    order = {n: i for i, n in enumerate(v.get("ranking") or [])}
    rows = []
    for r in sorted(select, key=lambda r: order.get(r.name, len(order))):
        s = r.summary("val_knn_top1", seeds)
        mark = "winner" if r.name == v.get("winner") else "reference baseline" if r.name == sel.get("reference") else ""
        rows.append(([esc(r.name), esc(r.role), esc(s.fmt()) if s is not None else "-",
                      f"{sum(1 for x in seeds if x in r.runs)}/{len(seeds)}", mark],
                     "win" if r.name == v.get("winner") else ""))
    out = (f"<p><b>Select phase</b>: every finalist and both baselines trained again from scratch at seeds "
           f"{esc(seeds)} and ranked on mean val kNN (the choice; exploratory, no test split read).</p>"
           + _table(["recipe", "role", "val kNN (mean ± std)", "seeds done", "chosen"], rows))
    rseeds = v.get("seeds") or sorted({s for r in report for s in r.runs})
    rows = []
    for r in report:
        cells = [esc(r.name), esc(r.role)]
        for m, _ in METRICS:
            s = r.summary(m, rseeds)
            cells.append(esc(s.fmt()) if s is not None else "-")
        rows.append((cells, "win" if r.name == v.get("served") else ""))
    floor = v.get("floor")
    if floor:
        rows.append(([esc("floor"), "untrained", "-", f"{floor['mean']:.3f} ± {floor['std']:.3f}", "-"], "dim"))
    if rows:
        out += (f"<p><b>Report phase</b>: the winner and the reference baseline on fresh seeds {esc(rseeds)} "
                f"(looks at {esc(v.get('looks'))}, stopped: {esc(v.get('stop'))}); only these runs read the "
                f"test split, and they took no part in choosing.</p>"
                + _table(["recipe", "role", *[f"{label} (mean ± std)" for _, label in METRICS]], rows))
    return out


def _image_se(d: dict) -> str:
    """The test images' standard error of a comparison and how it was measured (bound beside a paired one)."""
    if d.get("image_se") is None:
        return "-"
    how = d.get("image_method") or "bound"
    bound = f" (bound {d['image_se_bound']:.3f})" if how == "paired" and d.get("image_se_bound") is not None else ""
    return f"{d['image_se']:.3f} {how}{bound}"


def _to_show(d: dict) -> str:
    """For a lift not shown: the fresh report seeds its measured mean would take at its spread."""
    from ..verdict.sequential import REJECTED, SHOW_CAP, seeds_to_show

    if d.get("state") == REJECTED or not (d.get("mean") or 0) > 0:
        return "-"
    n = seeds_to_show(d)
    return f"&gt; {SHOW_CAP}" if n is None else str(n)


def _lift(rec) -> str:
    v = rec.verdict or {}
    comps = v.get("comparisons")
    if comps:
        rows = [([esc(name), f"{d['mean']:+.3f}", f"[{d['low']:+.3f}, {d['high']:+.3f}]", esc(d.get("n")),
                  esc(d.get("state")), f"{d.get('mde', float('nan')):+.3f}", _to_show(d), _image_se(d)],
                 "win" if d.get("state") == "rejected" else "")
                for name, d in comps.items()]
        served = v.get("served")
        return (f"<p>The declared comparisons in test probe top-1, {esc(v.get('method'))}. Served: "
                f"<b>{esc(served) if served else 'nothing'}</b>.</p>"
                + _table(["comparison", "mean lift", "95% interval (adjusted)", "seeds", "state", "detectable lift",
                          "fresh seeds to show its lift (80% power)",
                          "images' SE (paired per image, or the independence bound)"], rows, {1, 2, 5, 6}))
    lift = v.get("lift") or {}
    if not lift:
        return "<p>No verdict, so no lift intervals.</p>"
    rows = []
    for name, iv in lift.items():
        if name == "best_baseline":
            continue
        what = "the untrained floor" if name == "floor" else name + (" (best baseline)" if name == v.get(
            "best_baseline") else "")
        above = "yes" if iv["low"] > 0 else "no"
        rows.append(([esc(what), f"{iv['mean']:+.3f}", f"[{iv['low']:+.3f}, {iv['high']:+.3f}]", esc(iv.get("n")),
                      above], "win" if iv["low"] > 0 else ""))
    return (f"<p>Lift of the winner <b>{esc(v.get('winner'))}</b> in test probe top-1, {esc(v.get('method'))}.</p>"
            + _table(["over", "mean lift", "95% interval", "seeds", "interval above 0"], rows, {1, 2}))


def _floor(rec) -> str:
    m, v = rec.metrics, rec.verdict or {}
    rows = [([esc("val kNN top-1 (search seed)"), _num(m.get("floor_val_knn_top1"))], ""),
            ([esc("val probe top-1 (search seed)"), _num(m.get("floor_val_probe_top1"))], "")]
    f = v.get("floor")
    if f:
        rows.append(([esc(f"test probe top-1 (seeds {v.get('seeds')})"), f"{f['mean']:.3f} ± {f['std']:.3f}"], ""))
    return ("<p>The randomly initialised encoder under the same evaluation: a recipe must beat it to be "
            "promoted.</p>" + _table(["untrained floor", "value"], rows, {1}))


def _search_table(rec) -> str:
    trials = sorted(rec.search_trials, key=lambda t: (t.objective is not None, t.objective or 0), reverse=True)
    rows = []
    for t in trials:
        last = (rec.curves.get(t.run_id) or [(None, None)])[-1]
        rows.append(([esc(t.trial_id), esc(t.baseline or "sampled"), esc(t.status), _num(t.objective),
                      esc(last[0] if last[0] is not None else "-"), esc((t.error or "")[:100])],
                     "win" if t.run_id == rec.search.best_run_id else ""))
    return (f"<p>{len(trials)} trials, ranked on the final val kNN top-1 (no test split read in this stage).</p>"
            + _table(["trial", "kind", "status", "val kNN (final)", "epochs", "note"], rows, {3, 4}))


def _importance(rec, images, info) -> str:
    out = []
    if info.get("importance_note"):
        out.append(f"<p class='note'>Parameter importances: {esc(info['importance_note'])}.</p>")
    imp = info.get("importances") or {}
    if imp:
        out.append(_img(images, "importances.png", "parameter importances",
                        "Optuna's fANOVA evaluator (seeded) on the validation objective of the search trials "
                        "that are points of the space (COMPLETE ones; diverged ones count at 0)."))
        rows = [([esc(k), f"{v:.3f}"], "") for k, v in sorted(imp.items(), key=lambda kv: kv[1], reverse=True)]
        out.append(_table(["parameter", "importance"], rows, {1}))
        out.append(_img(images, "slices.png", "slice plot",
                        f"Optuna's slice plot: val kNN top-1 of each trial against "
                        f"{esc(', '.join(info.get('slice_params') or []))} (colour: trial number)."))
    return "".join(out)


def _kv(d: dict) -> str:
    return _table(["key", "value"], [([esc(k), esc(v if not isinstance(v, (dict, list)) else json.dumps(v))], "")
                                     for k, v in d.items()])


def _recipe(rec) -> str:
    p = rec.promoted
    out = []
    if p is None:
        why = rec.search.promotion or "nothing was promoted from this search"
        out.append(f"<p>Nothing from this search is the current recipe: {esc(why)}.</p>")
        if rec.current is not None:
            c = rec.current
            out.append(f"<p>The current recipe of this key comes from search "
                       f"<code>{esc(c.provenance.get('search_id'))}</code> (test probe {esc(c.score.fmt())}).</p>")
        if rec.store_note:
            out.append(f"<p class='note'>The recipe store could not be read: {esc(rec.store_note)}</p>")
        fp = {k[5:]: v for k, v in rec.params.items() if k.startswith("data.")}
        out.append(f"<h3>Data fingerprint</h3><p><code>{esc(rec.search.fingerprint)}</code></p>" + _kv(fp))
        return "".join(out)
    prov = p.provenance
    out.append(f"<p><b>{esc(p.backbone)}</b> on {esc(p.dataset)} (budget {esc(p.budget)}), "
               f"state {esc(p.state)}, promoted {esc(p.updated_at)}; confirmed test probe top-1 "
               f"{esc(p.score.fmt())} over seeds {esc((prov.get('verdict') or {}).get('seeds'))}."
               f"</p><pre>{esc(json.dumps(p.recipe, indent=2, sort_keys=True))}</pre>")
    keep = ("search_id", "search_run_id", "experiment", "winner", "space", "code_version", "date", "settings")
    info = {k: prov[k] for k in keep if k in prov}
    info.update(store_run_id=p.run_id, source_run_id=p.source_run_id)
    out.append("<h3>Provenance</h3>" + _kv(info))
    fp = prov.get("fingerprint") if isinstance(prov.get("fingerprint"), dict) else {"digest": p.fingerprint}
    out.append(f"<h3>Data fingerprint</h3><p><code>{esc(p.fingerprint)}</code></p>" + _kv(fp))
    return "".join(out)


def commands(rec) -> list[tuple[str, str]]:
    """``(what, command)`` pairs: the search again, the recipe at full length, this report."""
    from ..plan import SearchSettings
    from ..study_storage import redact_url

    s = dict(rec.settings) or {"backbone": rec.backbone}
    defaults = {f.name: f.default for f in dataclasses.fields(SearchSettings) if f.name != "backbone"}
    parts = ["recipe-search", "run", "--backbone", s.get("backbone") or rec.backbone]
    skip = {"backbone", "search_id", "force", "ray_address", "num_cpus", "yes", "tracking_uri", "study_storage"}
    for name, default in defaults.items():
        value = s.get(name, default)
        if name in skip or value == default or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else {"early_stopping": "--no-early-stopping"}.get(name, ""))
        else:
            parts += [flag, str(value)]
    uri = [] if not s.get("tracking_uri") else ["--tracking-uri", redact_url(s["tracking_uri"])]
    if s.get("study_storage"):
        parts += ["--study-storage", redact_url(s["study_storage"])]
    out = [("run the search again (same space, budget, data and seeds; a new search id)",
            " ".join(shlex.quote(p) for p in [*parts, *uri] if p))]
    train = ["recipe-search", "train", rec.backbone, "--epochs", str(FULL_EPOCHS),
             "--dataset", s.get("dataset") or rec.search.dataset or "cifar10"]
    if s.get("data"):
        train += ["--data", s["data"]]
    what = ("train the promoted recipe at full length" if rec.promoted is not None else
            "train the backbone's current promoted recipe at full length (not this search's: nothing of it "
            "was promoted)")
    out.append((f"{what}; the search's trials ran {rec.params.get('max_epochs', '?')} epochs on the proxy",
                " ".join(shlex.quote(p) for p in [*train, *uri])))
    fp = rec.search.fingerprint
    if fp:
        out.append(("print the recipe of this data fingerprint",
                    " ".join(shlex.quote(p) for p in ["recipe-search", "show", rec.backbone, "--fingerprint", fp, *uri])))
    out.append(("this report", " ".join(shlex.quote(p) for p in ["recipe-search", "report", rec.search_id, *uri])))
    if s.get("study_storage"):
        out.append((f"the Optuna study (recipe-search:{rec.search_id}) in optuna-dashboard",
                    f"optuna-dashboard {shlex.quote(redact_url(s['study_storage']))}"))
    return out


def _reproduce(rec) -> str:
    return "".join(f"<p>{esc(what)}:</p><pre>{esc(cmd)}</pre>" for what, cmd in commands(rec))


# --------------------------------------------------------------------------- the page


def page(rec, images: dict[str, bytes], info: dict) -> str:
    from ..study_storage import redact_url

    v = rec.verdict or {}
    line = rec.search.verdict_line or v.get("line") or "no verdict (no confirmed recipe completed every seed)"
    started = (_dt.datetime.fromtimestamp(rec.start_time / 1000, _dt.timezone.utc).isoformat(timespec="seconds")
               if rec.start_time else "?")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    counts: dict[str, int] = {}
    for t in rec.search_trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    meta = (f"search <code>{esc(rec.search_id)}</code> · {esc(rec.params.get('dataset'))} · budget "
            f"{esc(rec.params.get('budget'))} · sampler {esc(rec.how)} · "
            f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))} · started {esc(started)} · "
            f"MLflow parent run <code>{esc(rec.parent_run_id)}</code> in {esc(rec.experiment)} at "
            f"{esc(redact_url(rec.tracking_uri))} · generated {esc(now)}")
    promo = rec.search.promotion
    verdict = (f"<p class='verdict {esc(v.get('verdict', ''))}'>{esc(line)}</p>"
               + (f"<p>Promotion: {esc(promo)}</p>" if promo else "")
               + "".join(f"<p class='note'>{esc(n)}</p>" for n in rec.notes))
    cmp = rec.comparison
    history = ("Optuna's optimization history: every completed search trial (dots) and the best val kNN top-1 "
               "so far, against trial number" + (f", beside search <code>{esc(cmp['search_id'])}</code> "
                                                  f"({esc(cmp['sampler'])} sampler) of the same backbone, data "
                                                  "and space" if cmp else
                                                  "; no search with the other sampler (--sampler random "
                                                  "--no-early-stopping) of the same backbone, data and space "
                                                  "to compare with") + ". The dashed line is the untrained floor.")
    body = [
        f"<h1>recipe-search report: {esc(rec.backbone)}</h1><p class='meta'>{meta}</p>",
        _section("verdict", "Verdict", verdict),
        _section("confirmation", "Confirmation leaderboard (fresh seeds)", _confirmation(rec)),
        _section("lift", "Lift intervals", _lift(rec)),
        _section("floor", "Untrained floor", _floor(rec)),
        _section("curves", "Learning curves (search stage)", _img(
            images, "curves.png", "learning curves",
            "val kNN top-1 per epoch of every search trial; baselines in colour, a red x where ASHA stopped a "
            "trial, dotted lines for failed or diverged trials.")),
        _section("best-so-far", "Best so far", _img(images, "best_so_far.png", "best so far", history)
                 or f"<p class='note'>{esc(info.get('history_note'))}</p>"),
        _section("importance", "Parameter importances", _importance(rec, images, info)),
        _section("search", "Search-stage leaderboard (validation only)", _search_table(rec)),
        _section("recipe", "Promoted recipe", _recipe(rec)),
        _section("reproduce", "Reproduce", _reproduce(rec)),
    ]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>recipe-search report: {esc(rec.backbone)} ({esc(rec.search_id)})</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
