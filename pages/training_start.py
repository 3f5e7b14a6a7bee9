"""The Training page's form that starts runs: defaults for this machine, a measured duration, transfer learning."""

import time

import streamlit as st

from lib import jobs
from lib.learn.models import REGISTRY, default_device
from lib.views import monitor, training_form as tf
from pages.job_widgets import locked, submit_job


def _proposal(ws):
    """The form's defaults for this machine and the measured duration they take (None while the speed of this
    machine is measured, in a process of its own)."""
    proposed = tf.form_defaults(ws, device := default_device().type)
    rate = tf.known_throughput(ws, "boehle2019", proposed.resolution, device)
    if rate is None:
        if tf.start_measuring(ws, "boehle2019", proposed.resolution, device):
            return proposed, None
        return proposed, "No estimate: measuring this machine's training speed failed."
    try:
        return proposed, tf.estimate(rate, tf.split_sizes(ws), proposed.epochs)[1]
    except (FileNotFoundError, ValueError) as exc:   # no split yet: nothing to estimate
        return proposed, f"No estimate: {exc}"


@st.fragment(run_every=2)
def _estimate_pending(ws) -> None:
    """Waits for the measurement, then reruns the page so the form shows the estimate."""
    proposed, estimate = _proposal(ws)
    if estimate is not None:
        st.rerun()
    st.caption(f"{proposed.why} :material/timer: Measuring this machine's training speed (a few optimiser steps, "
               "in the background)…")


def start_form(ws, runs: list) -> None:
    """The form that starts training runs (one per seed and fold) in the background."""
    with st.expander("Start a training run", expanded=not runs):
        proposed, estimate = _proposal(ws)
        if estimate is None:
            _estimate_pending(ws)
        else:
            st.caption(f"{proposed.why} {estimate}")
        with st.form("train"):
            c1, c2, c3, c4 = st.columns(4)
            model = c1.selectbox("Model", sorted(REGISTRY), index=sorted(REGISTRY).index("boehle2019"),
                                 help="; ".join(f"{name}: {REGISTRY[name].reference}" for name in sorted(REGISTRY)))
            grids = [proposed.resolution] + [r for r in (1.0, 2.0, 3.0) if r != proposed.resolution]
            resolution = c2.selectbox("Grid (mm)", grids, help="Scans are resampled to this grid once and cached. "
                                      "The estimate above is for the proposed grid; a finer one is slower (on a "
                                      "CPU 2 mm takes about 2.5× as long as 3 mm).")
            epochs = c3.number_input("Max epochs", 1, 1000, proposed.epochs)
            patience = c4.number_input("Early-stopping patience", 1, 100, proposed.patience,
                                       help="Stop when validation balanced accuracy has not improved for this "
                                            "many epochs; the best epoch's checkpoint is kept.")
            c1, c2, c3, c4 = st.columns(4)
            lr = c1.number_input("Learning rate", 1e-6, 1.0, proposed.lr, format="%.0e")
            wd = c2.number_input("Weight decay", 0.0, 1.0, 1e-4, format="%.0e")
            batch = c3.number_input("Batch size", 1, 256, 8)
            shift = c4.number_input("Left–right shift (voxels)", 0, 10, max(1, round(2 / proposed.resolution)),
                                    help="Random translation range; the paper's 2 voxels at 1 mm = 2 mm.")
            c1, c2, c3, c4 = st.columns(4)
            sources = ["", *monitor.transfer_sources(ws, runs)]
            init_from = c3.selectbox("Start from (transfer learning)", sources, key="train_init_from",
                                     format_func=lambda s: s or "nothing: train from scratch",
                                     help="Copy the convolution weights of a finished run or a shipped model "
                                          "(Eitel: ADNI → MS); the head is re-initialised when its classes differ.")
            freeze = c4.number_input("Frozen blocks", 0, 4, 0, help="With a source: the first convolution blocks "
                                                                   "keep the source's weights.")
            seeds_text = c1.text_input("Seeds", "0", help="One run per seed, e.g. `0 1 2` (repeated runs).")
            k = int((ws.config.get("k_folds") or 5))
            folds = c2.multiselect("Cross-validation folds", list(range(k)),
                                   help="Empty: the workspace's train/validation split. Each chosen fold gives "
                                        "runs validated on that fold (the test split never changes).")
            submitted = st.form_submit_button("Start training", type="primary", disabled=locked("train"))
        if submitted:
            try:
                seeds = [int(s) for s in seeds_text.replace(",", " ").split()] or [0]
            except ValueError:
                st.error(f"Seeds must be whole numbers separated by spaces, not {seeds_text!r}.")
            else:
                job = submit_job(ws, jobs.Train(
                    model=model, resolution=float(resolution), epochs=int(epochs), patience=int(patience),
                    lr=float(lr), weight_decay=float(wd), batch_size=int(batch), shift=int(shift),
                    seeds=tuple(seeds), folds=tuple(int(f) for f in folds) or None, init_from=init_from or None,
                    freeze=int(freeze) if init_from else 0))
                if job is not None:
                    st.session_state["train_job"] = job.id
                    time.sleep(1.0)
                    st.rerun()
