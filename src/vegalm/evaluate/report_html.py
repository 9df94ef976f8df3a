"""One report document, two renderings: Markdown (figures as files beside it) and a
self-contained HTML page (figures inlined as base64 data URIs, no external CSS or scripts).

A document is a list of blocks: ``("h", level, text)``, ``("p", text)``, ``("table", headers,
rows)``, ``("img", path, caption)``, ``("list", items)``. Text may use `code` and **bold**.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

Block = tuple[Any, ...]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #4878a8; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f0f4f8; } td:first-child, th:first-child { text-align: left; }
tr.ref td { color: #555; background: #fafafa; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def _inline_md(text: str) -> str:
    return text


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def to_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(_inline_md(b[1]))
        elif kind == "list":
            out.append("\n".join(f"- {_inline_md(i)}" for i in b[1]))
        elif kind == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_cell(c).replace("|", "/") for c in row[: len(headers)]) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            rel = Path(b[1]).relative_to(base) if Path(b[1]).is_relative_to(base) else Path(b[1])
            out.append(f"![{b[2]}]({rel.as_posix()})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            headers, rows = b[1], b[2]
            klass = b[3] if len(b) > 3 else [None] * len(rows)
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in headers)
            body = "".join(
                (f"<tr class=\"{k}\">" if k else "<tr>") + "".join(f"<td>{_inline_html(_cell(c))}</td>"
                                                                  for c in row[: len(headers)]) + "</tr>"
                for row, k in zip(rows, klass))
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(b[2])}\" src=\"data:image/png;base64,{data}\">"
                       f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)
