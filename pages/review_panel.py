"""The review panel every analysis page shows under what it displays, and the pieces the Reviews page reuses.

Usage on a page::

    from pages.review_panel import review_panel

    review_panel(ws, {"kind": "scan", "scan_id": row["scan_id"]},
                 {"page": "pages/heatmaps.py", "run": run_id, "checkpoint": ckpt_hash, "method": "lrp",
                  "params": {"beta": 1.0}, "vmin": -lim, "vmax": lim})

``target`` says what is judged — ``{"kind": "scan", "scan_id": …}``, ``{"kind": "group", "group": "TP"}``,
``{"kind": "region", "region": "Left Hippocampus"}`` or ``{"kind": "coordinate", "mni": [x, y, z]}`` — and
``settings`` everything needed to show it again: ``page`` (the page's script path), run id, checkpoint
hash, method and parameters, colour scaling, slice positions… (JSON values). The panel lists the reviews
of the target, lets a reviewer add one, and offers a link that reopens the page with the target and
settings as query parameters; :func:`view_param` reads them back on the page.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from lib.reviews import auth
from lib.reviews import (VERDICTS, DatabaseUnavailable, ReviewError, ReviewRecord, ReviewStore, plain_markdown,
                         safe_markdown, target_key, target_label)
from lib.views import review_links as links
from pages.login import current_actor, current_identity, review_store

VERDICT_BADGE = {"plausible": ":green-badge[:material/check_circle: plausible]",
                 "implausible": ":red-badge[:material/cancel: implausible]",
                 "artefact": ":orange-badge[:material/warning: artefact]",
                 "unsure": ":gray-badge[:material/help: unsure]"}

# --------------------------------------------------------------------------- links that restore a view
def view_params(target: dict, settings: dict) -> dict[str, str]:
    """Query parameters for a target and its settings, in the workspace of this address."""
    return links.view_params(target, settings, st.query_params.get("workspace"))


def view_url(target: dict, settings: dict) -> str:
    """The full address of this page showing ``target`` under ``settings``."""
    base = st.context.url or ""
    return f"{base}?{urlencode(view_params(target, settings))}"


def view_param(name: str, default=None, kind=str):
    """A view setting from the address, parsed as ``kind`` (:func:`lib.views.review_links.parse_param`)."""
    return links.parse_param(st.query_params.get(name), default, kind)


def _md_name(name: str) -> str:
    # a user name is shown inside Markdown: escape what could format it
    return plain_markdown(name)


def _flash(key: str, kind: str, text: str) -> None:
    st.session_state.setdefault("review_flash", {})[key] = (kind, text)


def _show_flash(key: str) -> None:
    kind, text = st.session_state.get("review_flash", {}).pop(key, (None, None))
    if kind:
        getattr(st, kind)(text)


def _actor() -> auth.Identity | None:
    """Who clicked, as the account database says now: a callback runs before app.py signs the request in
    again, so the identity of the render may hold a role since taken away. In an open app, the typed name."""
    who = current_actor()
    return current_identity() if who is not None and who.source == "open" else who


def _act(key: str, fn, done: str | None = None) -> bool:
    """Run one store call ``fn(who)`` from a button callback, as the person clicking now (never the
    identity the buttons were drawn for); any refusal becomes a message for the person."""
    try:
        fn(_actor())
    except auth.PermissionDenied as exc:
        _flash(key, "error", str(exc))
    except (ReviewError, DatabaseUnavailable) as exc:
        _flash(key, "warning", str(exc))
    else:
        if done:
            _flash(key, "success", done)
        return True
    return False


def render_thread(store: ReviewStore, r: ReviewRecord, who: auth.Identity | None, key: str, *,
                  show_target: bool = False, show_link: bool = False) -> None:
    """One review with its replies, rendered safely, and the actions ``who`` may take on it."""
    k = f"{key}-{r.id}"
    with st.container(border=True):
        head = [VERDICT_BADGE.get(r.verdict, "")]
        if show_target:
            head.append(f"**{_md_name(target_label(r.target))}**")
        head += [f"**{_md_name(r.author)}**", links.when(r.created_at)]
        if r.status == "resolved":
            head.append(f":blue-badge[:material/task_alt: resolved by {_md_name(r.resolved_by or '')}]")
        if r.deleted:
            head.append(f":red-badge[deleted by {_md_name(r.deleted_by or '')}]")
        if r.edited:
            head.append(f"edited · v{r.version}")
        st.markdown(" · ".join(h for h in head if h))
        if summary := links.settings_summary(r):
            st.caption(_md_name(summary))
        st.markdown(safe_markdown(r.text) or "*(no comment)*")
        if r.tags:
            st.caption(" ".join(f"`{_md_name(t)}`" for t in r.tags))
        try:
            replies = store.thread(r.id)[1:] if r.n_replies else []
        except DatabaseUnavailable as exc:
            st.warning(str(exc))
            replies = []
        for rep in replies:
            pad, body = st.columns([0.04, 0.96])
            with body:
                st.markdown(f":material/subdirectory_arrow_right: **{_md_name(rep.author)}** · {links.when(rep.created_at)}"
                            + (f" · edited · v{rep.version}" if rep.edited else ""))
                st.markdown(safe_markdown(rep.text))
                if auth.can_change(who, rep.author):
                    _edit_popover(store, rep, who, f"{k}-{rep.id}", key, label="Edit reply")
        if show_link and r.page and r.page.endswith(".py"):
            try:
                st.page_link(r.page, label="Open the view this was written on", icon=":material/open_in_new:",
                             query_params=view_params(r.target, r.settings))
            except Exception:  # the page is gone or not part of this app
                st.caption(f"written on {r.page}")
        _actions(store, r, who, k, key)


def _edit_popover(store, r: ReviewRecord, who, k: str, flash_key: str, label: str = "Edit") -> None:
    with st.popover(label, icon=":material/edit:"):
        if not r.is_reply:
            st.selectbox("Verdict", VERDICTS, index=VERDICTS.index(r.verdict) if r.verdict in VERDICTS else 3,
                         key=f"{k}-verdict")
        st.text_area("Comment (Markdown)", value=r.text, key=f"{k}-text", height=120)
        if not r.is_reply:
            st.text_input("Tags", value=", ".join(r.tags), key=f"{k}-tags")

        def save(version=r.version):  # the version this person saw when they clicked
            ss = st.session_state
            changes = {"text": ss[f"{k}-text"]}
            if not r.is_reply:
                changes.update(verdict=ss[f"{k}-verdict"], tags=ss[f"{k}-tags"])
            _act(flash_key, lambda who: store.edit(who, r.id, version, **changes), f"Review #{r.id} saved.")

        st.button("Save", key=f"{k}-save", type="primary", on_click=save)


def _actions(store: ReviewStore, r: ReviewRecord, who, k: str, flash_key: str) -> None:
    can_reply = auth.can_write(who) and not r.deleted
    can_change = auth.can_change(who, r.author)
    if not (can_reply or can_change):
        return
    cols = st.columns(5, gap="small")
    if can_reply:
        with cols[0].popover("Reply", icon=":material/reply:"):
            st.text_area("Reply (Markdown)", key=f"{k}-reply", height=100)

            def reply():
                text = st.session_state.get(f"{k}-reply", "")
                if _act(flash_key, lambda who: store.reply(who, r.id, text), "Reply posted."):
                    st.session_state[f"{k}-reply"] = ""

            st.button("Post reply", key=f"{k}-post", type="primary", on_click=reply)
    if can_change and not r.deleted:
        with cols[1]:
            _edit_popover(store, r, who, k, flash_key)
        if r.status == "open":
            cols[2].button("Resolve", key=f"{k}-resolve", icon=":material/task_alt:",
                           on_click=lambda v=r.version: _act(flash_key, lambda who: store.resolve(who, r.id, v)))
        else:
            cols[2].button("Reopen", key=f"{k}-reopen", icon=":material/undo:",
                           on_click=lambda v=r.version: _act(flash_key, lambda who: store.reopen(who, r.id, v)))
        cols[3].button("Delete", key=f"{k}-delete", icon=":material/delete:",
                       on_click=lambda v=r.version: _act(flash_key, lambda who: store.delete(who, r.id, v),
                                                         f"Review #{r.id} deleted (an admin can restore it)."))
    elif can_change and r.deleted:
        cols[1].button("Restore", key=f"{k}-restore", icon=":material/restore_from_trash:",
                       on_click=lambda v=r.version: _act(flash_key, lambda who: store.restore(who, r.id, v)))
    with cols[4].popover("History", icon=":material/history:"):
        try:
            for h in store.history(r.id):
                st.markdown(f"**v{h.version}** · {h.action} by {_md_name(h.actor)} · {h.at:%Y-%m-%d %H:%M:%S} UTC"
                            + (f" · {VERDICT_BADGE.get(h.snapshot.get('verdict'), '')}" if h.snapshot.get("verdict")
                               else ""))
                if h.action in ("create", "edit"):
                    st.markdown(safe_markdown(h.snapshot.get("text", "")))
        except (ReviewError, DatabaseUnavailable) as exc:
            st.warning(str(exc))


# --------------------------------------------------------------------------- the panel
def review_panel(ws, target: dict, settings: dict | None = None, *, key: str | None = None,
                 title: str | None = None) -> None:
    """Reviews of ``target`` and a form for a new one (see the module docstring for the arguments).

    ``key`` keeps two panels on one page apart (default: the target itself); ``title`` overrides the
    heading. Renders into the current container; never raises for database trouble (it says so instead).
    """
    settings = dict(settings or {})
    key = "rv-" + (key or target_key(target))
    who = current_identity()
    with st.container(border=True):
        st.markdown(f"#### :material/rate_review: {title or 'Reviews of ' + _md_name(target_label(target))}")
        _show_flash(key)
        try:
            store = review_store(ws)
            reviews = store.find(target=target)
        except DatabaseUnavailable as exc:
            st.warning(str(exc))
            return
        for r in reviews:
            render_thread(store, r, who, key)
        if not reviews:
            st.caption("No reviews yet.")
        if auth.can_write(who):
            _new_review_form(store, who, target, settings, key)
        elif who is None and not st.session_state.get("accounts_on"):
            st.caption("Type your name in the sidebar to write a review.")
        else:
            st.caption("You can read reviews; writing them needs the reviewer role.")
        with st.popover("Link to this view", icon=":material/link:"):
            st.caption("Opens this page on the same target with the same settings.")
            st.code(view_url(target, settings), language=None, wrap_lines=True)


def _new_review_form(store: ReviewStore, who, target: dict, settings: dict, key: str) -> None:
    with st.expander("Write a review", icon=":material/edit_note:"):
        st.segmented_control("Verdict", VERDICTS, key=f"{key}-new-verdict", default="plausible")
        st.text_area("Comment (Markdown)", key=f"{key}-new-text", height=110,
                     placeholder="What do you see? Is the relevance plausible anatomically?")
        st.text_input("Tags", key=f"{key}-new-tags", placeholder="comma-separated, e.g. hippocampus, motion")

        def submit():
            ss = st.session_state
            verdict, text, tags = ss.get(f"{key}-new-verdict"), ss.get(f"{key}-new-text", ""), ss.get(f"{key}-new-tags", "")
            if not verdict:
                _flash(key, "warning", "Choose a verdict first.")
                return
            if _act(key, lambda who: store.create(who, target, settings, verdict=verdict, text=text, tags=tags,
                                              page=settings.get("page")), "Review saved."):
                ss[f"{key}-new-text"] = ""
                ss[f"{key}-new-tags"] = ""

        st.button("Save review", key=f"{key}-new-save", type="primary", on_click=submit)
