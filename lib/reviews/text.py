"""Review text is Markdown written by people; shown to others it must never run as HTML or script.

:func:`safe_markdown` parses the text (markdown-it, CommonMark with tables and strikethrough, raw HTML
off) and writes it out again from an allow-list: paragraphs, headings, emphasis, strikethrough, code,
lists, quotes, rules, tables and links. Everything else becomes text. Every character of text is
written backslash-escaped where Markdown could read it as syntax, so the output holds no construct this
module did not write itself, whichever Markdown dialect renders it (Streamlit's included):

* raw HTML (blocks, inline tags, comments) is shown as the text typed;
* links — inline, reference-style, autolinks, however their scheme is spelled (entities, case, control
  characters) — keep their target only for ``http``, ``https`` and ``mailto``; others become their label;
* images never load (a remote image is a tracking pixel in every reader's browser): an http(s) image
  becomes a link to it, any other its alt text; an image inside a link is its alt text;
* entities are shown as typed (``&lt;`` reads "&lt;").

Streamlit's ``st.markdown`` without ``unsafe_allow_html`` is the renderer; this is the second,
independent layer. :func:`plain_markdown` is for names that are shown literally.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from urllib.parse import urlsplit

SAFE_SCHEMES = ("http", "https", "mailto")
_PUNCT = set(string.punctuation)
_CTRL = re.compile(r"[\x00-\x20\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"]).disable("entity")
    md.validateLink = lambda url: True  # every link reaches the allow-list below, which drops what is unsafe
    return md


def plain_markdown(text: str) -> str:
    """``text`` as Markdown that renders exactly those characters (no syntax, no line structure)."""
    return _escape(" ".join((text or "").split()))


def _escape(text: str) -> str:
    # any ASCII punctuation may be backslash-escaped in CommonMark; escaping all of it leaves no syntax
    # (and no Streamlit extension: ``:red[…]``, ``$…$``, ``:emoji:``)
    return "".join("\\" + c if c in _PUNCT else c for c in text)


def safe_url(url: str | None) -> str | None:
    """``url`` if its scheme is http, https or mailto (spelled in any case, with any control characters or
    spaces removed first, as browsers do); otherwise None."""
    plain = _CTRL.sub("", url or "")
    try:
        scheme = urlsplit(plain).scheme.lower()
    except ValueError:
        return None
    if scheme not in SAFE_SCHEMES or ":" not in plain:
        return None
    if scheme != "mailto" and not plain.lower().startswith(scheme + "://"):
        return None
    # percent-encode what could end or confuse a Markdown link destination
    return re.sub(r"[()<>\\\s\"'`\[\]]", lambda m: "%{:02X}".format(ord(m.group())), plain)


def _inline(nodes, in_link: bool = False) -> str:
    out = []
    for n in nodes:
        t = n.type
        if t == "text":
            out.append(_escape(n.content))
        elif t == "softbreak":
            out.append("\n")
        elif t == "hardbreak":
            out.append("\\\n")
        elif t == "code_inline":
            out.append(_code_span(n.content))
        elif t == "em":
            out.append("*" + _inline(n.children, in_link) + "*")
        elif t == "strong":
            out.append("**" + _inline(n.children, in_link) + "**")
        elif t == "s":
            out.append("~~" + _inline(n.children, in_link) + "~~")
        elif t == "link":
            label = _inline(n.children, True)
            url = None if in_link else safe_url(n.attrs.get("href"))
            if url:
                out.append(f"[{label if label.strip() else _escape(url)}]({url})")
            else:
                out.append(label)
        elif t == "image":
            alt = _inline(n.children, True) or "image"
            url = None if in_link else safe_url(n.attrs.get("src"))
            out.append(f"[{alt}]({url})" if url else alt)
        else:  # anything unforeseen: its text only
            out.append(_escape(n.content) if n.content else _inline(n.children, in_link))
    return "".join(out)


def _code_span(code: str) -> str:
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", code)), default=0) + 1)
    pad = " " if code.startswith(("`", " ")) or code.endswith(("`", " ")) else ""
    return f"{ticks}{pad}{code.replace(chr(10), ' ')}{pad}{ticks}"


def _fence(code: str, info: str) -> list[str]:
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", code)), default=0) + 1)
    lang = re.sub(r"[^A-Za-z0-9_+.-]", "", info.split()[0]) if info.strip() else ""
    return [ticks + lang, *code.rstrip("\n").split("\n"), ticks]


def _inline_of(node) -> str:
    return _inline(node.children[0].children) if node.children else ""


def _blocks(nodes, tight: bool = False) -> list[str]:
    lines: list[str] = []
    for n in nodes:
        block = _block(n)
        if block is None:
            continue
        if lines and not tight:
            lines.append("")
        lines.extend(block)
    return lines


def _block(n) -> list[str] | None:
    t = n.type
    if t == "paragraph":
        return _inline_of(n).split("\n")
    if t == "heading":
        return ["#" * int(n.tag[1:]) + " " + _inline_of(n).replace("\n", " ")]
    if t in ("fence", "code_block"):
        return _fence(n.content, n.info if t == "fence" else "")
    if t == "hr":
        return ["***"]
    if t == "blockquote":
        return ["> " + line if line else ">" for line in _blocks(n.children)]
    if t in ("bullet_list", "ordered_list"):
        tight = all(p.hidden for item in n.children for p in item.children if p.type == "paragraph")
        start = int(n.attrs.get("start", 1) or 1)
        out = []
        for i, item in enumerate(n.children):
            marker = "-" if t == "bullet_list" else f"{start + i}."
            body = _blocks(item.children, tight) or [""]
            pad = " " * (len(marker) + 1)
            if out and not tight:
                out.append("")
            out.append(f"{marker} {body[0]}".rstrip())
            out.extend(pad + line if line else "" for line in body[1:])
        return out
    if t == "table":
        rows = []
        for section in n.children:
            for tr in section.children:
                rows.append([_inline_of(cell).replace("\n", " ") for cell in tr.children])
        if not rows:
            return None
        sep = ["---"] * len(rows[0])
        return ["| " + " | ".join(r) + " |" for r in rows[:1]] + ["| " + " | ".join(sep) + " |"] + \
            ["| " + " | ".join(r) + " |" for r in rows[1:]]
    if t == "html_block":  # not produced with HTML off; as text if it ever is
        return [_escape(line) for line in n.content.rstrip("\n").split("\n")]
    if n.children:
        return _blocks(n.children)
    return [_escape(n.content)] if n.content else None


def safe_markdown(text: str) -> str:
    """Markdown with only allow-listed constructs and safe links (see the module docstring)."""
    from markdown_it.tree import SyntaxTreeNode

    if not (text or "").strip():
        return ""
    tree = SyntaxTreeNode(_parser().parse(text))
    return "\n".join(_blocks(tree.children)).strip("\n")
