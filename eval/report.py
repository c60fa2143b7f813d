"""results.json and the standalone HTML report of an eval run (tables, matplotlib plots embedded as PNG, a grid of
playable clips with their prompts), the comparison report of several runs, and a Markdown summary for the README:
``python -m eval.report outputs/eval/shapes_av/NAME/results.json`` prints it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from pathlib import Path

UNIT_RANGE = (-1.0, 1.0)  # plotted together: higher-is-better scores whose value, chance and ceiling lie here
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.clip{border:1px solid #ddd;padding:6px;width:330px;font-size:12px}
.clip video{width:156px;height:156px;image-rendering:pixelated;background:#000}.sig{font-weight:bold}
.better{color:#070}.worse{color:#b00}.meta{font-size:13px;color:#333}details{margin:.4em 0}"""


def _clean(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, private keys (``_...``) dropped."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    return path


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _ci(ci) -> str:
    return "–" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return _img(buffer.getvalue())


def _img(png: bytes) -> str:
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _in_unit_range(*values) -> bool:
    return all(v is None or UNIT_RANGE[0] <= v <= UNIT_RANGE[1] for v in values)


def scores_plot(results: dict) -> str:
    """One panel per group: value with interval (bars), chance (x) and ceiling (|) of the unit-scale,
    higher-is-better scores (the others are in the tables)."""
    plt = _pyplot()
    groups = results["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
    for ax, (group, entry) in zip(axes[0], groups.items()):
        items = [(n, s) for n, s in entry["scores"].items()
                 if s["value"] is not None and s["higher_is_better"]
                 and _in_unit_range(s["value"], s.get("chance"), s.get("ceiling"))]
        ys = range(len(items))
        values = [s["value"] for _, s in items]
        err = [[max(0.0, s["value"] - (s["ci"][0] if s["ci"][0] is not None else s["value"])) for _, s in items],
               [max(0.0, (s["ci"][1] if s["ci"][1] is not None else s["value"]) - s["value"]) for _, s in items]]
        ax.barh(list(ys), values, xerr=err, color="#7aa6d6", capsize=2, label="model")
        for y, (_, s) in zip(ys, items):
            if s.get("chance") is not None:
                ax.plot(s["chance"], y, "rx", label="chance" if y == 0 else None)
            if s.get("ceiling") is not None:
                ax.plot(s["ceiling"], y, "g|", ms=14, mew=2, label="ceiling" if y == 0 else None)
        ax.set_yticks(list(ys), [n for n, _ in items])
        ax.set_title(f"{group} (n={entry['n']})")
        ax.set_xlim(min([0.0, *values]) - 0.05, 1.05)
    axes[0][0].legend(loc="lower right", fontsize=8)
    return _png(fig)


def _score_table(entry: dict) -> str:
    rows = ["<tr><th class=l>score</th><th>value</th><th>95% interval</th><th>chance</th><th>ceiling (real)</th>"
            "<th>ceiling interval</th><th>n</th><th class=l>what</th></tr>"]
    for name, s in entry["scores"].items():
        arrow = "↑" if s["higher_is_better"] else "↓"
        rows.append(f"<tr><td class=l>{html.escape(name)} {arrow}</td><td>{_fmt(s['value'])}</td><td>{_ci(s['ci'])}"
                    f"</td><td>{_fmt(s.get('chance'))}</td><td>{_fmt(s.get('ceiling'))}</td>"
                    f"<td>{_ci(s.get('ceiling_ci'))}</td><td>{s['n']}</td>"
                    f"<td class=l>{html.escape(s.get('description', ''))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _video(path: str | None, label: str) -> str:
    if not path:
        return ""
    src = html.escape(path, quote=True)
    return f'<figure style="display:inline-block;margin:0 2px"><video controls loop preload="none" src="{src}">' \
           f'</video><figcaption>{html.escape(label)}</figcaption></figure>'


def _clip_scores(scores: dict | None) -> str:
    if not scores:
        return ""
    cells = "".join(f"<tr><td class=l>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in scores.items())
    return f"<table>{cells}</table>"


def _header(title: str, meta: dict) -> str:
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(json.dumps(v) if not isinstance(v, str) else v)}"
                    f"</li>" for k, v in meta.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul class=meta>{items}</ul>")


def write_report(results: dict, path: Path) -> Path:
    """report.html of one run (clip paths in results are relative to its folder)."""
    from eval.suites import load_suite

    meta = {"checkpoint": results["checkpoint"], "size": results["size"], "created": results["created"],
            "settings": results["settings"], "code version": results["code_version"],
            "hardware": results["hardware"], "timings (s)": results.get("timings", {})}
    parts = [_header(f"{results['suite']} — {results['checkpoint']['name']}", meta)]
    for group, entry in results["groups"].items():
        parts.append(f"<h2>{html.escape(group)} (n={entry['n']})</h2>{_score_table(entry)}")
    if any(entry["scores"] for entry in results["groups"].values()):
        parts.append("<h2>Plots</h2>" + scores_plot(results))
    suite = load_suite(results["suite"])
    for title, png in (suite.plots(results) if hasattr(suite, "plots") else []):
        parts.append(f"<h3>{html.escape(title)}</h3>{_img(png)}")
    parts.append(f"<h2>Clips ({len(results['clips'])})</h2><div class=grid>")
    for clip in results["clips"]:
        parts.append(f"<div class=clip><div><b>{html.escape(clip['id'])}</b> ({html.escape(clip['group'])})</div>"
                     f"{_video(clip['video'], 'generated')}{_video(clip.get('reference'), 'real')}"
                     f"<p>{html.escape(clip['prompt'])}</p><details><summary>scores</summary>"
                     f"{_clip_scores(clip.get('scores'))}</details></div>")
    parts.append("</div></body></html>")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


def _comparison_table(baseline: str, other: str, scores: dict) -> str:
    rows = [f"<tr><th class=l>score</th><th>{html.escape(baseline)}</th><th>{html.escape(other)}</th>"
            "<th>difference</th><th>95% interval</th><th>p (paired permutation)</th><th>n</th></tr>"]
    for name, s in scores.items():
        css = ("better" if s["better"] else "worse") if s["significant"] and s["better"] is not None else ""
        css += " sig" if s["significant"] else ""
        diff = "–" if s["difference"] is None else f"{s['difference']:+.3f}"
        rows.append(f"<tr class='{css}'><td class=l>{html.escape(name)} {'↑' if s['higher_is_better'] else '↓'}"
                    f"</td><td>{_fmt(s['baseline'])}</td><td>{_fmt(s['other'])}</td><td>{diff}</td>"
                    f"<td>{_ci(s['ci'])}</td><td>{_fmt(s['p_value'])}</td><td>{s['n']}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_comparison_report(comparison: dict, path: Path) -> Path:
    names = [r["name"] for r in comparison["runs"]]
    meta = {"runs": {r["name"]: r["checkpoint"] for r in comparison["runs"]}, "created": comparison["created"],
            "same settings": comparison["same_settings"],
            "significance": f"bold: p < {comparison['significance_level']} (green better, red worse)"}
    parts = [_header(f"{comparison['suite']} — comparison", meta), "<p>Per-run reports: " + ", ".join(
        f"<a href='{html.escape(r['report'], quote=True)}'>{html.escape(r['name'])}</a>" for r in comparison["runs"])
        + "</p>"]
    for comp in comparison["comparisons"]:
        parts.append(f"<h2>{html.escape(comp['other'])} vs {html.escape(comp['baseline'])}</h2>")
        for group, scores in comp["groups"].items():
            parts.append(f"<h3>{html.escape(group)}</h3>{_comparison_table(comp['baseline'], comp['other'], scores)}")
    parts.append(f"<h2>Clips ({len(comparison['clips'])})</h2><div class=grid>")
    for clip in comparison["clips"]:
        videos = "".join(_video(v, n) for v, n in zip(clip["videos"], names))
        parts.append(f"<div class=clip style='width:{170 * (len(names) + 1)}px'><b>{html.escape(clip['id'])}</b> "
                     f"({html.escape(clip['group'])})<br>{videos}{_video(clip.get('reference'), 'real')}"
                     f"<p>{html.escape(clip['prompt'])}</p></div>")
    parts.append("</div></body></html>")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


def markdown_summary(results: dict) -> str:
    """A Markdown table per group (value [interval] | chance | ceiling) for the README."""
    lines = [f"{results['suite']} on `{results['checkpoint']['name']}` ({results['size']} size, "
             f"{results['settings'].get('clips')} clips, sampler {json.dumps(results['settings'].get('sampler'))})"]
    for group, entry in results["groups"].items():
        lines += ["", f"**{group}** (n={entry['n']})", "", "| score | value [95% interval] | chance | ceiling |",
                  "|---|---|---|---|"]
        for name, s in entry["scores"].items():
            lines.append(f"| {name} {'↑' if s['higher_is_better'] else '↓'} | {_fmt(s['value'])} {_ci(s['ci'])} | "
                         f"{_fmt(s.get('chance'))} | {_fmt(s.get('ceiling'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m eval.report RESULTS_JSON  (prints a Markdown summary)")
    print(markdown_summary(json.loads(Path(sys.argv[1]).read_text())))
