"""A report as a list of blocks, written as Markdown (images linked) and as one self-contained HTML file
(images embedded as base64, no script, no external style): readable offline either way.

The one Markdown writer: the demo report, ``eval.md`` and the atlas report are all built as a ``Document``;
the tables that ``unimm reports`` generates into README.md are ``markdown_table``'s.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CODE = re.compile(r"(`[^`]+`)")
_EMPHASIS = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\*([^*\s](?:[^*]*[^*\s])?)\*"), r"<em>\1</em>"),
]
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}"""


def cell(value: Any, spec: str = ".4g") -> str:
    """A table cell: a float formatted with ``spec``, "–" for a missing value, anything else as text."""
    if value is None:
        return "–"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    """A Markdown table's lines; ``align`` has one letter per column, ``l`` or ``r`` (default: all left)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align or "l" * len(header))
    return ["| " + " | ".join(header) + " |", rule] + [
        "| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows
    ]


def _inline(text: str) -> str:
    """The Markdown this report uses inline: `code`, **bold**, *italic*; everything else escaped."""
    out = []
    for part in _CODE.split(text):
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1], quote=False)}</code>")
            continue
        part = html.escape(part, quote=False)
        for pattern, repl in _EMPHASIS:
            part = pattern.sub(repl, part)
        out.append(part)
    return "".join(out)


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("image", (path, alt)))

    def markdown(self, root: Path) -> str:
        """Markdown with images linked relative to ``root`` (where report.md is written)."""
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out += ["#" * level + " " + text, ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                out += markdown_table(*value) + [""]
            elif kind == "image":
                path, alt = value
                out += [f"![{alt}]({path.relative_to(root).as_posix()})", ""]
        return "\n".join(out)

    def html(self) -> str:
        """One HTML file; images are embedded, so it can be mailed or opened anywhere."""
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]  # fmt: skip
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out.append(f"<h{level}>{_inline(text)}</h{level}>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "image":
                path, alt = value
                data = base64.b64encode(Path(path).read_bytes()).decode()
                out.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        out.append("</body></html>")
        return "\n".join(out)
