"""The report's HTML: one self-contained page (inline CSS, images as data URIs, no script, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; } nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 12px; } th, td { border: 1px solid #ccc; padding: 3px 6px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; display: block; }
.note { color: #777; font-style: italic; } .warn { color: #a40; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .grid figure { margin: 0; }
figcaption { font-size: 12px; color: #555; }
"""


def num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and value == value else ""


def image(uri: str | None, caption: str, missing: str) -> str:
    """A figure with its caption, or a note saying why there is none."""
    if uri is None:
        return f'<p class="note">{escape(caption)}: {escape(missing)}</p>'
    return f'<figure><img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{escape(str(v))}</td>' if n else f"<td>{escape(str(v))}</td>"
            for v, n in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def leaderboard_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ("#", "run", "kind", "model", "CV mIoU", "± std", "LB", "private", "CV - LB", "image", "dataset")
    headers += ("folds", "date", "settings")
    cells = [
        (
            i,
            r["run"] + (f" ({r['study']})" if r["study"] else ""),
            r["kind"],
            r["model"],
            num(r["miou"]),
            num(r["miou_std"]),
            num(r.get("lb_public")),
            num(r.get("lb_private")),
            num(r.get("lb_gap")),
            num(r.get("miou_image")),
            num(r.get("miou_dataset")),
            r["folds"],
            r["date"],
            ("[predicts background only] " if r.get("background_only") else "") + r["settings"],
        )
        for i, r in enumerate(rows, 1)
    ]
    numeric = (True, False, False, False, *([True] * 8), False, False)
    return table(headers, cells, numeric)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: (anchor, title, body HTML) per section, with a table of contents."""
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    parts = "\n".join(section(*s) for s in sections)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>"
        f"<nav>{nav}</nav>\n{parts}\n</body></html>\n"
    )
