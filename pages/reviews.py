"""Reviews: every review of the workspace (filter, search, export), a queue of unreviewed scans, agreement."""

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from lib.reviews import auth
from lib.views import overview, review_queue as rq
from lib.views.render import ortho_image
from lib.reviews import (TARGET_KINDS, VERDICTS, DatabaseUnavailable, export_csv, plain_markdown, target_label)
from lib.reviews.agreement import agreement
from pages.loaders import volume
from pages.workspace_sidebar import current_workspace
from pages.login import current_identity, review_store
from pages.review_panel import VERDICT_BADGE, _act, _show_flash, render_thread

PAGE_SIZE = 20


def all_reviews_tab(ws, store, who, authors: list, tags: list) -> None:
    """Every review of the workspace: filters, search, counts, CSV export, one page of threads."""
    c = st.columns([2.2, 1.6, 1.0, 1.5, 1.2, 1.2])
    search = c[0].text_input("Search", placeholder="words in the text, a target, a tag or an author")
    verdicts = c[1].multiselect("Verdict", VERDICTS, placeholder="any")
    status = c[2].selectbox("Status", ["any", "open", "resolved"])
    kinds = c[3].multiselect("Target", TARGET_KINDS, placeholder="any")
    author = c[4].selectbox("Author", ["anyone", *authors])
    tag = c[5].selectbox("Tag", ["any", *tags])
    show_deleted = auth.is_admin(who) and st.toggle("Show deleted reviews", help="Admins see and can restore them.")
    try:
        reviews = store.find(search=search or None, verdict=verdicts or None,
                             status=None if status == "any" else status, target_kind=kinds or None,
                             author=None if author == "anyone" else author, tag=None if tag == "any" else tag,
                             include_deleted=show_deleted)
    except DatabaseUnavailable as exc:
        st.error(str(exc))
        st.stop()
    n_open = sum(r.status == "open" for r in reviews)
    by_verdict = pd.Series([r.verdict for r in reviews]).value_counts()
    st.markdown(f"**{len(reviews)}** review{'s' if len(reviews) != 1 else ''} · {n_open} open · "
                + " · ".join(f"{VERDICT_BADGE[v]} {int(by_verdict.get(v, 0))}" for v in VERDICTS))

    def _export() -> str:
        rows = []
        for r in reviews:
            rows.extend(store.thread(r.id, include_deleted=show_deleted) if r.n_replies else [r])
        return export_csv(rows)

    left, right = st.columns([1, 1])
    left.download_button("Export CSV", data=_export, file_name=f"reviews-{ws.name}.csv", mime="text/csv",
                         icon=":material/download:", disabled=not reviews,
                         help="These reviews and their replies, with targets, settings and versions.")
    with st.expander("As a table"):
        st.dataframe(pd.DataFrame([{
            "id": r.id, "target": target_label(r.target), "verdict": r.verdict, "status": r.status,
            "author": r.author, "created": r.created_at, "replies": r.n_replies, "tags": ", ".join(r.tags),
            "run": r.run_id, "method": r.method, "version": r.version, "text": r.text[:200]} for r in reviews]),
            hide_index=True, width="stretch")
    n_pages = max(1, -(-len(reviews) // PAGE_SIZE))
    page_no = right.number_input("Page", 1, n_pages, 1, help=f"{PAGE_SIZE} reviews a page") if n_pages > 1 else 1
    _show_flash("rv-page")
    for r in reviews[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]:
        render_thread(store, r, who, "rv-page", show_target=True, show_link=True)
    if not reviews:
        st.info("No review matches." if (search or verdicts or kinds or status != "any" or author != "anyone"
                                        or tag != "any") else
                "No reviews yet: write one from the review panel under a scan on the **Dataset overview** page, "
                "or rate scans in the **Review queue**.")


def _predictions(ws) -> dict[str, pd.DataFrame]:
    """Predictions of the workspace's training runs (``runs/<run>/predictions.csv``), newest first."""
    out = {}
    if ws.runs_dir.exists():
        for p in sorted(ws.runs_dir.glob("*/predictions.csv"), key=lambda p: p.stat().st_mtime, reverse=True):
            out[p.parent.name] = pd.read_csv(p, dtype={"scan_id": str})
    return out


def queue_tab(ws, store, who) -> None:
    """Step through the cohort's scans not yet rated (blinded by default) and rate them."""
    if not (ws.exists and ws.cohort_csv.exists()):
        st.info("This workspace has no cohort yet: the queue steps through its scans once it has one.")
    else:
        cohort = overview.load_cohort(ws)
        c = st.columns([1, 1.3, 2])
        blinded = c[0].toggle("Blinded", value=True,
                              help="Hides diagnosis, prediction, score and other people's reviews while you rate, "
                                   "and shows scans in an order of your own.")
        mine = c[1].radio("Scans", ["not yet rated by me", "not yet reviewed by anyone"],
                          label_visibility="collapsed") == "not yet rated by me"
        preds = _predictions(ws)
        run = c[2].selectbox("Predictions of run", list(preds), disabled=blinded or not preds,
                             placeholder="no training run yet", index=0 if preds else None)
        if who is None or not auth.can_write(who):
            st.info("Rating scans needs a reviewer account" + (" — or your name in the sidebar." if
                                                             not st.session_state.get("accounts_on") else "."))
        else:
            order = list(cohort["scan_id"])
            if blinded:  # an order of the rater's own, so raters do not drift together
                seed = int(hashlib.sha256(who.username.encode()).hexdigest()[:8], 16)
                order = list(np.random.default_rng(seed).permutation(order))
            try:
                done = store.reviewed_targets(author=who.username if mine else None)
            except DatabaseUnavailable as exc:
                st.error(str(exc))
                st.stop()
            skipped = st.session_state.setdefault("queue_skipped", [])
            todo = [s for s in order if s not in done and s not in skipped] or \
                [s for s in order if s not in done]
            st.progress(1 - len([s for s in order if s not in done]) / max(len(order), 1),
                        text=f"{len(order) - len([s for s in order if s not in done])} of {len(order)} scans rated")
            _show_flash("rv-queue")
            if not todo:
                st.success("Every scan has been rated. The **Agreement** tab compares raters.")
            else:
                queue_scan(ws, store, who, cohort, todo[0], blinded, preds, run, skipped)


def queue_map(ws, scan: str, row, run: str | None, hippocampus) -> dict:
    """The scan's slices, under the map of a method the reviewer picks (blinded: no score, self-scaled);
    the settings a review records about what was shown."""
    from lib.explain.catalogue import absolute_by_default
    from lib.data.templates import Grid
    from pages.heatmaps_scan import scan_on_grid
    from pages.loaders import heatmap_store

    choices = rq.map_choices(ws, run)
    label = st.selectbox("Map over the scan", [rq.NO_MAP, *choices], key="queue-map", index=1 if choices else 0,
                         help="A finished heatmap store of any run, scaled by this scan's own map (its 90th to "
                              "99.5th percentile), so nothing about the prediction is shown." if choices else
                              "No run with heatmaps yet.")
    map_run, folder = choices.get(label, (None, None))
    store = heatmap_store(str(ws.cache_dir / "heatmaps" / folder)) if folder else None
    if store is None or scan not in store.scan_ids:
        st.image(ortho_image(volume(ws, row["path"]), tuple(int(v) for v in hippocampus)), width="stretch")
        return {}
    path = ws.resolve(row["path"])
    anat, rng = scan_on_grid(str(path), path.stat().st_mtime_ns, store.grid.resolution)
    ov = rq.scan_overlay(store.get(scan), absolute_by_default(store.params.get("method", "")))
    ijk = tuple(int(v) for v in Grid(store.grid.resolution).mni_to_voxel((-26, -22, -14)))
    st.image(ortho_image(anat, ijk, overlay=ov, bg_range=rng), width="stretch")
    st.caption(f"{label} over the scan ({store.grid.resolution:g} mm grid)")
    return {"map_run": map_run, "store": store.folder.name, "method": store.params.get("method")}


def queue_scan(ws, store, who, cohort, scan: str, blinded: bool, preds: dict, run, skipped: list) -> None:
    """One scan of the queue: its slices, its facts unless blinded, the verdict form and its reviews."""
    row = cohort.set_index("scan_id").loc[scan]
    hippocampus = ws.grid.mni_to_voxel((-26, -22, -14))
    left, right = st.columns([2.0, 1.1])
    with left:
        shown = queue_map(ws, scan, row, run, hippocampus)
    with right:
        st.markdown(f"**Scan** `{scan}`")
        if not blinded:
            facts = {k: row[k] for k in ("diagnosis", "age", "sex", "mmse", "site") if k in row}
            if run and scan in set(preds[run]["scan_id"]):
                p = preds[run].set_index("scan_id").loc[scan]
                facts.update({k: p[k] for k in ("ad_score", "predicted", "outcome") if k in p})
            st.dataframe(pd.DataFrame({"": {k: str(v) for k, v in facts.items()}}),
                         width="stretch")
        else:
            st.caption("Blinded: diagnosis, prediction and score are hidden.")
        st.radio("Verdict", VERDICTS, key="queue-verdict", index=None)
        st.text_area("Comment (Markdown)", key="queue-text", height=90)
        settings = {"page": "pages/overview.py", "tab": "Scan viewer", "slices": [int(v) for v in hippocampus],
                    "queue": True, **({"run": run} if run and not blinded else {}), **shown}

        def _rate(scan=scan, settings=settings):
            ss = st.session_state
            if not ss.get("queue-verdict"):
                from pages.review_panel import _flash
                _flash("rv-queue", "warning", "Choose a verdict first.")
                return
            if _act("rv-queue", lambda who: store.create(who, {"kind": "scan", "scan_id": scan}, settings,
                                                     verdict=ss["queue-verdict"], text=ss.get("queue-text", ""),
                                                     blinded=blinded, page=settings["page"]),
                    f"Rated {scan}."):
                ss["queue-verdict"], ss["queue-text"] = None, ""

        b = st.columns([1.7, 1])
        b[0].button("Save and next", type="primary", on_click=_rate, icon=":material/skip_next:",
                    width="stretch")
        b[1].button("Skip", on_click=lambda s=scan: skipped.append(s), width="stretch")
    if not blinded:
        for r in store.find(target={"kind": "scan", "scan_id": scan}):
            render_thread(store, r, who, "rv-queue")


def agreement_tab(store) -> None:
    """Fleiss' and Cohen's κ over the scans rated by two or more people."""
    try:
        res = agreement(store.ratings("scan"))
    except DatabaseUnavailable as exc:
        st.error(str(exc))
        st.stop()
    if res["n_targets"] < 2:
        st.info("Agreement appears once two or more people have rated the same scans (at least two of them) — "
                "for example through the blinded **Review queue**.")
    else:
        c = st.columns(3)
        c[0].metric("Scans rated by ≥ 2 people", res["n_targets"])
        c[1].metric("Raters", res["n_raters"])
        c[2].metric("Fleiss' κ", f"{res['fleiss']:.2f}" if res["fleiss"] is not None else "–",
                    help="All raters at once; 1 = perfect, 0 = as by chance. Each rater's latest verdict per scan.")
        st.markdown("**Cohen's κ for each pair of raters** (scans both rated)")
        st.dataframe(res["pairs"].assign(agreement=res["pairs"]["agreement"] * 100), hide_index=True, width="stretch",
                     column_config={"rater_a": "rater A", "rater_b": "rater B", "n": "scans",
                                    "cohen_kappa": st.column_config.NumberColumn("Cohen's κ", format="%.2f"),
                                    "agreement": st.column_config.NumberColumn("raw agreement", format="%.0f%%")})
        st.markdown("**Verdicts by scan**")
        st.dataframe(res["table"], width="stretch")


def main() -> None:
    ws = current_workspace()
    who = current_identity()
    st.title("Reviews")
    try:
        store = review_store(ws)
        authors, tags = store.authors(), store.tags()
    except DatabaseUnavailable as exc:
        st.error(str(exc))
        if st.button("Try again"):
            st.rerun()
        st.stop()
    st.caption(f"Stored in {store.display_url} · filed under workspace **{plain_markdown(ws.name)}**")
    tab_all, tab_queue, tab_agree = st.tabs(["All reviews", "Review queue", "Agreement"])
    with tab_all:
        all_reviews_tab(ws, store, who, authors, tags)
    with tab_queue:
        queue_tab(ws, store, who)
    with tab_agree:
        agreement_tab(store)


main()
