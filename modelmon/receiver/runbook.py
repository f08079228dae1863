"""The runbook served at GET /runbook: alerting/RUNBOOK.md rendered to HTML.

Markdown is CommonMark plus GitHub tables (markdown-it-py), with raw HTML escaped and only safe
link schemes kept. Every heading gets an ``id`` made by GitHub's rules, so the ``runbook_url``
anchors written for GitHub (``RUNBOOK.md#modelmonaccuracylow``) work here as ``/runbook#…``.

Which file: ``--runbook PATH``; without it the first that exists of the copy packaged with
modelmon (``modelmon/receiver/RUNBOOK.md``, for installs that ship one) and the source
checkout's ``alerting/RUNBOOK.md`` (editable installs, the native stack, tests).
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "RUNBOOK.md"
CHECKOUT = Path(__file__).resolve().parents[2] / "alerting" / "RUNBOOK.md"
_NOT_SLUG = re.compile(r"[^\w\- ]", re.UNICODE)


def default_path() -> Path | None:
    """The runbook used without --runbook: the packaged copy, else the checkout's; None if neither."""
    for candidate in (PACKAGED, CHECKOUT):
        if candidate.is_file():
            return candidate
    return None


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return _NOT_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def render(text: str) -> str:
    """HTML of a Markdown document (body only), headings with GitHub-style ids (duplicates get -1, -2 …)."""
    from markdown_it import MarkdownIt  # imported on first use: `modelmon --help` stays fast

    md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    tokens = md.parse(text)
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        inline = tokens[i + 1]
        plain = "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline"))
        base = slug(plain)
        n = seen.get(base, 0)
        seen[base] = n + 1
        token.attrSet("id", base if n == 0 else f"{base}-{n}")
    return md.renderer.render(tokens, md.options, {})


class Runbook:
    """A Markdown file rendered on demand, re-rendered when the file changes (edits show up live)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], str] | None = None

    def html(self) -> str:
        """The rendered body; OSError when the file cannot be read, LookupError without a file."""
        if self.path is None:
            raise LookupError("no runbook configured")
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        body = render(self.path.read_text(encoding="utf-8", errors="replace"))
        with self._lock:
            self._cache = (stamp, body)
        return body
