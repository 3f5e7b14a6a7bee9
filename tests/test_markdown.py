"""Review Markdown: no image loads, no HTML, no link but http(s)/mailto, however written; ordinary Markdown renders."""

from __future__ import annotations

import html
import random
import re

import pytest
from markdown_it import MarkdownIt

from lib.reviews import plain_markdown, safe_markdown

PIXEL = "https://tracker.example/p.png"
PAYLOADS = [
    # reference-style images: full, collapsed, shortcut
    f"![x][p]\n\n[p]: {PIXEL}",
    f"![x][]\n\n[x]: {PIXEL}",
    f"![x]\n\n[x]: {PIXEL}",
    f'![x][p]\n\n[p]: <{PIXEL}> "title"',
    # nested: an image inside a link, references on both
    f"[![img]({PIXEL})](https://ok.example)",
    f"[![a][i]][l]\n\n[i]: {PIXEL}\n[l]: https://ok.example",
    f"[![a](data:image/png;base64,iVBORw0KGgo=)](javascript:alert(1))",
    # inline images in every container
    f"![a]({PIXEL})",
    f'![a]({PIXEL} "title")',
    f"![a](<{PIXEL}>)",
    f"> quoted ![q]({PIXEL})",
    f"- item ![l]({PIXEL})\n  - nested ![n]({PIXEL})",
    f"| a |\n|---|\n| ![t]({PIXEL}) |",
    f"# heading ![h]({PIXEL})",
    "![d](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    # autolinks
    "<data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==>",
    "<javascript:alert(1)>",
    "<JAVASCRIPT:alert(1)>",
    "<file:///etc/passwd>",
    # schemes however spelled
    "[a](data:text/html,<script>alert(1)</script>)",
    "[a][r]\n\n[r]: data:text/html,x",
    "[a][r]\n\n[r]: <javascript:alert(1)>",
    "[a][R]\n\n[r]: vbscript:msgbox(1)",
    "[a](&#x6A;avascript:alert(1))",
    "[a](&#106;&#97;vascript:alert(1))",
    "[a](jav&#x09;ascript:alert(1))",
    "[a](jav&#0;ascript:alert(1))",
    "[a](JaVaScRiPt:alert(1))",
    "[a](vbscript:msgbox(1))",
    "[a](file:///etc/passwd)",
    "[a](<java script:alert(1)>)",
    "[a](\x01javascript:alert(1))",
    "[a](java\x00script:alert(1))",
    "[a](java\u200bscript:alert(1))",
    "[a](//evil.example/p.png)",
    '[a]( javascript:alert(1) "t")',
    "[a](javascript&colon;alert(1))",
    "[a](https:javascript:alert(1))",
    # raw HTML: blocks, inline, comments, CDATA, entities
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    f'<div>\n<img src="{PIXEL}">\n</div>',
    "<svg onload=alert(1)>",
    '<iframe src="https://evil.example"></iframe>',
    "<script>alert(1)</script>",
    "<!-- <img src=x> -->",
    "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "&lt;img src=x onerror=alert(1)&gt;",
    '<p style="background:url(https://tracker.example/p.png)">x</p>',
    # Streamlit's own Markdown extensions must not apply either
    ":red[x] :material/warning: $\\href{javascript:alert(1)}{x}$",
]
SAFE_HREF = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
RENDERERS = {
    # a permissive renderer: raw HTML passes, links are not validated
    "commonmark+html": MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]),
}
RENDERERS["commonmark+html"].validateLink = lambda url: True


def _assert_harmless(out: str) -> str:
    for name, md in RENDERERS.items():
        rendered = md.render(out)
        low = rendered.lower()
        for bad in ("<img", "<script", "<iframe", "<svg", "<div", "<style", "<!--", "<![cdata"):
            assert bad not in low, (name, bad, out, rendered)
        assert not re.search(r"<[a-z][^>]*\s(on\w+|style)\s*=", low), (name, rendered)
        for attr in re.findall(r'\s(?:href|src)="([^"]*)"', rendered):
            url = re.sub(r"[\x00-\x20]", "", html.unescape(attr))
            assert SAFE_HREF.match(url), (name, attr, out)
    return RENDERERS["commonmark+html"].render(out)


def test_enough_payloads():
    assert len(PAYLOADS) >= 25


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payload_renders_no_image_html_or_unsafe_link(payload):
    rendered = _assert_harmless(safe_markdown(payload))
    if PIXEL in payload and "![" in payload and "javascript" not in payload:
        # an http(s) image is not loaded; it becomes a link to it (or its label stays text inside a link)
        assert f'href="{PIXEL}"' in rendered or "<a href=\"https://ok.example\">" in rendered


def test_random_mixtures_stay_harmless():
    rng = random.Random(18)
    pieces = PAYLOADS + ["**b**", "*i*", "`c`", "\n\n", "\n", "[", "]", "(", ")", "!", "<", ">", "&", "#", "\\"]
    for _ in range(300):
        _assert_harmless(safe_markdown("".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))))


def test_ordinary_markdown_still_renders():
    src = ("# Hippocampus\n\nLeft side **stronger** than *right*, ~~not~~ `beta=0.5`; see "
           "[the paper](https://doi.org/10.1000/x?a=1&b=(2)) or <https://example.org/a> or "
           "[mail](mailto:ada@lab.org).\n\n1. first\n2. second\n   - nested\n\n> quoted\n> text\n\n"
           "```python\nx = '<b>' & 1\n```\n\n| region | value |\n|---|---|\n| Left Hippocampus | 0.5 |\n\n---\n\n"
           "A line  \nbreak and 3 < 4 > 2, 100% sure_ish [brackets] (parens) #hash 1. no list")
    out = RENDERERS["commonmark+html"].render(safe_markdown(src))
    for want in ("<h1>Hippocampus</h1>", "<strong>stronger</strong>", "<em>right</em>", "<s>not</s>",
                 "<code>beta=0.5</code>", '<a href="https://doi.org/10.1000/x?a=1&amp;b=%282%29">the paper</a>',
                 '<a href="https://example.org/a">https://example.org/a</a>', '<a href="mailto:ada@lab.org">mail</a>',
                 "<ol>\n<li>first</li>\n<li>second\n<ul>\n<li>nested</li>", "<blockquote>\n<p>quoted\ntext</p>",
                 '<pre><code class="language-python">x = \'&lt;b&gt;\' &amp; 1\n</code></pre>',
                 "<td>Left Hippocampus</td>", "<hr />", "<br />",
                 "3 &lt; 4 &gt; 2, 100% sure_ish [brackets] (parens) #hash 1. no list"):
        assert want in out, (want, out)


def test_plain_markdown_shows_names_literally():
    name = "*ada*_[x](javascript:1) <b> # :red[y]"
    out = RENDERERS["commonmark+html"].render(plain_markdown(name))
    assert out == "<p>" + html.escape(name, quote=False) + "</p>\n"
    assert safe_markdown("") == "" and safe_markdown(None) == ""
