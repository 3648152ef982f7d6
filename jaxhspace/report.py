"""A self-contained HTML report (images inlined as base64, no scripts, no network) for the demo job.

A report is a list of sections; each has a title, a paragraph, images (grids, plots) with captions, and
one score table whose rows are edits and whose columns are the probe's change of every factor.
"""
from __future__ import annotations

import base64
import html
import os

from jaxhspace.data.synthfaces import FACTORS

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{image-rendering:pixelated;max-width:100%} table{border-collapse:collapse;font-size:.85em;margin:.8em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} td.t{font-weight:bold;background:#eaf4ea} td.w{background:#fbeaea}
p.note{font-size:.9em;color:#444}
"""


def data_uri(path: str) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def score_table(rows: list[dict]) -> str:
    """HTML table of edit scores. Each row: {"edit": label, "target": factor, "target_change": signed float or
    None, "changes": {factor: magnitude}, "max_leakage": float}. The target's cell is green; a leak cell is red
    when it is at least half the target's magnitude."""
    names = list(FACTORS)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    out = ["<table><tr><th class=l>edit</th><th class=l>target</th><th>target change</th>"
           f"<th>max leakage</th>{head}</tr>"]
    for r in rows:
        tgt = r.get("target") or ""
        tmag = abs(r["changes"].get(tgt, 0.0)) if tgt else 0.0
        cells = []
        for n in names:
            v = r["changes"].get(n, float("nan"))
            cls = "t" if n == tgt else ("w" if tgt and v >= 0.5 * tmag else "")
            cells.append(f"<td class='{cls}'>{v:.3f}</td>")
        tc = r.get("target_change")
        out.append(f"<tr><td class=l>{html.escape(str(r['edit']))}</td><td class=l>{html.escape(tgt)}</td>"
                   f"<td>{'' if tc is None else f'{tc:+.3f}'}</td><td>{r['max_leakage']:.3f}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(path: str, title: str, intro: str, sections: list[dict]) -> str:
    """Write the report atomically and return its path.

    Args:
      sections: [{"title", "text", "images": [(png_path, caption)], "rows": score rows (see score_table),
        "note": optional small print}].
    """
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>"]
    for s in sections:
        parts.append(f"<section id='{html.escape(s.get('id', ''))}'><h2>{html.escape(s['title'])}</h2>"
                     f"<p>{s.get('text', '')}</p>")
        for img, cap in s.get("images", []):
            parts.append(f"<figure><img src='{data_uri(img)}' alt='{html.escape(cap)}'>"
                         f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        if s.get("rows"):
            parts.append(score_table(s["rows"]))
        if s.get("note"):
            parts.append(f"<p class=note>{s['note']}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    os.replace(path + ".tmp", path)
    return path
