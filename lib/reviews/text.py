"""Review text is Markdown written by people; shown to others it must never run as HTML or script.

:func:`safe_markdown` turns it into Markdown that renders the same words but cannot carry markup: every
``<`` and ``&`` is escaped (so no tag, comment or entity reaches the browser as HTML — a ``<script>`` is
shown as the text "<script>"), link targets are limited to http(s) and mailto, and images become plain
links (an image would load a remote address in every reader's browser). Streamlit's ``st.markdown``
without ``unsafe_allow_html`` is the renderer; this is the second, independent layer.
"""

from __future__ import annotations

import re

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
# [label](url "title") and ![alt](url); the URL may be wrapped in <…>, which is escaped by then
_INLINE_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*([^)\s]*)([^)]*)\)")
_REFERENCE = re.compile(r"^( {0,3}\[[^\]\n]+\]:\s*)(\S+)(.*)$", re.MULTILINE)


def _safe_url(url: str) -> str:
    plain = url.strip()
    if plain.startswith("&lt;") and plain.endswith("&gt;"):
        plain = plain[4:-4]
    lowered = re.sub(r"[\s\x00-\x1f]", "", plain).lower()
    if lowered.startswith(_SAFE_SCHEMES) or lowered.startswith(("#", "/", "?")) or ":" not in lowered.split("/")[0]:
        return plain
    return "#"


def safe_markdown(text: str) -> str:
    """Markdown with every HTML-capable construct neutralised (see the module docstring)."""
    out = (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # ">" is escaped too (no tag can close), but a line-leading "&gt;" is a Markdown quote: keep quotes
    out = re.sub(r"^( {0,3})((?:&gt; ?)+)", lambda m: m.group(1) + m.group(2).replace("&gt;", ">"), out,
                 flags=re.MULTILINE)

    def link(m: re.Match) -> str:
        bang, label, url, rest = m.groups()
        safe = _safe_url(url)
        if bang:  # images become links to the image
            return f"[{label or 'image'}]({safe})"
        return f"[{label}]({safe}{rest})"

    out = _INLINE_LINK.sub(link, out)
    out = _REFERENCE.sub(lambda m: m.group(1) + _safe_url(m.group(2)) + m.group(3), out)
    return out
