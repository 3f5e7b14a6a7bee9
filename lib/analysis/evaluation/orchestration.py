"""One evaluation request (:class:`Evaluation`): a run, its settings and methods, every cache key known without
loading a model or a scan, and the computation of whatever is missing, check by check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from lib.analysis.evaluation.data import (explain_batches, read_result, result_key, run_part, select_scans,
                                          write_result)
from lib.analysis.evaluation.localisation import localisation_rows
from lib.analysis.evaluation.perturbation import Perturbation, aopc
from lib.analysis.evaluation.sanity import sanity_run, weight_layers
from lib.analysis.evaluation.settings import (CHECKS, DEFAULT_METHODS, PERTURB_FIELDS, SANITY_FIELDS, TRUTH_FIELDS,
                                              MethodRequest, Settings, parse_method)
from lib.core import cache
from lib.core.progress import Progress
from lib.data.templates import brain_mask


class Evaluation:
    """One request: a run, settings and methods; knows every cache key without loading a model or a scan."""

    def __init__(self, ws, run, methods: Sequence[MethodRequest | str], settings: Settings = Settings()):
        from lib.explain.heatmaps import resolve_params
        from lib.data.volumes import store_path

        if settings.target is None:   # the run's positive class, named in every key
            settings = replace(settings, target=run.classes.positive)
        self.ws, self.run, self.settings = ws, run, settings
        self.methods = [parse_method(m) if isinstance(m, str) else m for m in methods]
        self.grid = run.grid
        self.scans = select_scans(ws, run, settings, run.classes)
        part = run_part(ws, run, "all")
        self.diagnosis = dict(zip(part["scan_id"].astype(str), part["diagnosis"].astype(str)))
        self.volumes_key = store_path(ws, part.drop(columns=["run_split"]), self.grid).name
        self.checkpoint = run.checkpoint_hash()
        self.root = ws.cache_dir / "evaluation"
        self.canonical = {}
        self.calls = {}
        for m in self.methods:
            self.calls[m.label], self.canonical[m.label] = resolve_params(m.method, m.params, self.grid)
        truth = ws.ground_truth_dir / "atrophy.csv"
        self.truth_key = f"{truth.stat().st_size}:{truth.stat().st_mtime_ns}" if truth.exists() else None

    # keys
    def _base(self, kind: str, scans: list[str]) -> dict:
        return {"kind": kind, "checkpoint": self.checkpoint, "volumes": self.volumes_key, "scans": scans,
                "target": self.settings.target, "grid": self.grid.resolution}

    def folder(self, check: str, m: MethodRequest | None = None) -> Path:
        s = self.settings
        if check == "random":
            payload = {**self._base("aopc_random", self.scans["aopc"]), **s.keyed(*PERTURB_FIELDS),
                       "repeats": s.random_repeats}
        elif check == "aopc":
            payload = {**self._base("aopc", self.scans["aopc"]), **s.keyed(*PERTURB_FIELDS, "order_score"),
                       "params": self.canonical[m.label]}
        elif check == "sanity":
            payload = {**self._base("sanity", self.scans["sanity"]), **s.keyed(*SANITY_FIELDS),
                       "params": self.canonical[m.label]}
        elif check == "localisation":
            payload = {**self._base("localisation", self.scans["localisation"]), **s.keyed(*TRUTH_FIELDS),
                       "truth_table": self.truth_key, "params": self.canonical[m.label], "ties": "expected"}
        else:
            raise ValueError(f"unknown check {check!r}")
        return self.root / result_key(payload)

    def job_key(self, checks: Iterable[str] = CHECKS) -> str:
        """Equal requests share one background job."""
        return "evaluate-maps:" + result_key({"run": self.run.id, "checkpoint": self.checkpoint,
                                        "methods": [m.spec for m in self.methods],
                                        "settings": asdict(self.settings), "checks": sorted(checks)})

    def has_truth(self) -> bool:
        return self.truth_key is not None and bool(self.scans["localisation"])

    def results(self) -> dict:
        """Whatever is cached for this request: ``{"random": r | None, "aopc": {label: r}, "sanity": {...},
        "localisation": {...}}`` (a method missing from a check has not been computed)."""
        out = {"random": read_result(self.folder("random")), "aopc": {}, "sanity": {}, "localisation": {}}
        for m in self.methods:
            for check in CHECKS:
                r = read_result(self.folder(check, m))
                if r is not None:
                    out[check][m.label] = r
        return out

    def missing(self, checks: Iterable[str] = CHECKS) -> list[tuple[str, str]]:
        """``(check, method label)`` pairs not cached yet (localisation only where a ground truth exists)."""
        out = []
        for check in checks:
            if check == "localisation" and not self.has_truth():
                continue
            if check == "aopc" and not cache.ok(self.folder("random")):
                out.append(("aopc", "random order"))
            out += [(check, m.label) for m in self.methods if not cache.ok(self.folder(check, m))]
        return out

    # work
    def run_checks(self, checks: Iterable[str] = CHECKS, *, device: torch.device | str | None = None,
                   progress: Progress | None = None) -> dict:
        """Compute every missing result of ``checks`` (cached as it goes) and return :meth:`results`."""
        checks = list(checks)
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}")
        checks = [c for c in CHECKS if c in checks]
        todo = self.missing(checks)
        if not todo:
            return self.results()
        work = _Work.start(self, todo, device, progress)
        perturb = None
        if any(c == "aopc" for c, _ in todo):
            perturb = Perturbation(work.model, self.settings, self.grid, work.brain, work.target, work.device)
        if ("aopc", "random order") in todo:   # the random-order baseline, shared by every method
            outs = perturb.random_outputs(work.inputs, self.scans["aopc"], work.tick)
            write_result(self.folder("random"), {
                "kind": "aopc_random", "label": "random order", "scan_ids": self.scans["aopc"],
                "outputs": outs.tolist(), "aopc": aopc(outs).tolist(), "settings": asdict(self.settings),
                **perturb.meta})
        for m in self.methods:
            mine = {c for c, lab in todo if lab == m.label}
            if mine:
                self._run_method(m, mine, work, perturb)
        return self.results()

    def _run_method(self, m: MethodRequest, mine: set[str], work: "_Work", perturb: Perturbation | None) -> None:
        """The checks ``mine`` of one method, each written to its cache folder as soon as it is done."""
        s, label = self.settings, m.label
        maps = self._maps(m, work.need_maps[label], work)
        common = {"method": m.method, "params": m.params, "canonical": self.canonical[label], "label": label,
                  "settings": asdict(s)}
        if "aopc" in mine:
            outs = perturb.morf_outputs(work.inputs, self.scans["aopc"], maps, label, work.tick)
            write_result(self.folder("aopc", m), {**common, "kind": "aopc", "scan_ids": self.scans["aopc"],
                                                  "outputs": outs.tolist(), "aopc": aopc(outs).tolist(),
                                                  **perturb.meta})
        if "localisation" in mine:
            rows = localisation_rows(self.ws, self.scans["localisation"], maps, self.grid, s, work.brain,
                                     self.diagnosis, label, work.tick)
            write_result(self.folder("localisation", m), {**common, "kind": "localisation",
                                                          "scan_ids": self.scans["localisation"], "rows": rows})
        if "sanity" in mine:
            ids = self.scans["sanity"]
            call = self.calls[label]
            result, example = sanity_run(
                work.model, work.inputs(ids),
                lambda mod, x: explain_batches(mod, x, m.method, call, work.target, s.batch_size),
                work.brain, s, label, work.tick)
            write_result(self.folder("sanity", m), {**common, "kind": "sanity", "scan_ids": ids, **result,
                                                    "top_fraction": s.top_fraction, "example_scan": ids[0]},
                         maps=example)

    def _maps(self, m: MethodRequest, ids: list[str], work: "_Work") -> dict:
        """The method's maps of ``ids``: from a finished heatmap store of the run, else computed in batches."""
        from lib.explain.heatmaps import find_store

        s, label, maps = self.settings, m.label, {}
        if not ids:
            return maps
        stored = find_store(self.ws, self.run, m.method, target=s.target, **m.params)
        if stored is not None and all(i in stored for i in ids):
            for sid in ids:
                maps[sid] = stored.get(sid)
            work.tick(len(ids), f"{label}: maps from the heatmap store")
            return maps
        for j in range(0, len(ids), s.batch_size):
            chunk = ids[j:j + s.batch_size]
            for sid, r in zip(chunk, explain_batches(work.model, work.inputs(chunk), m.method, self.calls[label],
                                                     work.target, s.batch_size)):
                maps[sid] = r
            work.tick(len(chunk), f"{label}: maps {min(j + s.batch_size, len(ids))}/{len(ids)}")
        return maps


@dataclass
class _Work:
    """What computing one request holds: the model on its device, the scans' inputs, the brain, the
    maps each method needs and the progress over every unit of work."""

    model: nn.Module
    device: torch.device
    target: int
    brain: np.ndarray
    inputs: Callable[[list[str]], torch.Tensor]
    need_maps: dict[str, list[str]]
    total: int
    progress: Progress | None
    done: int = 0

    @classmethod
    def start(cls, ev: "Evaluation", todo: list[tuple[str, str]], device, progress: Progress | None) -> "_Work":
        from lib.data.volumes import volume_store
        from lib.data.volumes import load_batch
        from lib.learn.runs import load_checkpoint

        s = ev.settings
        model, normaliser, _ = load_checkpoint(ev.run.best_checkpoint, device)
        dev = next(model.parameters()).device
        store = volume_store(ev.ws, run_part(ev.ws, ev.run, "all").drop(columns=["run_split"]), ev.grid)

        def inputs(ids: list[str]) -> torch.Tensor:
            return torch.from_numpy(load_batch(store, store.rows(ids), normaliser)).unsqueeze(1).to(dev)

        need_maps = {m.label: [] for m in ev.methods}
        for check, label in todo:
            if check in ("aopc", "localisation") and label in need_maps:
                need_maps[label] += [x for x in ev.scans[check] if x not in need_maps[label]]
        units = {"aopc": len(ev.scans["aopc"]), "localisation": len(ev.scans["localisation"]),
                 "sanity": (len(weight_layers(model)) + 1) * len(ev.scans["sanity"])}
        total = sum(units[c] for c, label in todo if label != "random order") + \
            (len(ev.scans["aopc"]) if ("aopc", "random order") in todo else 0) + \
            sum(len(v) for v in need_maps.values())
        work = cls(model=model, device=dev, target=ev.run.classes.index(s.target) if isinstance(s.target, str) and not s.target.isdigit()
                   else int(s.target),
                   brain=brain_mask(ev.grid), inputs=inputs, need_maps=need_maps, total=total, progress=progress)
        work.tick(0, f"evaluating {len(ev.methods)} method(s) on {len(ev.scans['aopc'])} scans")
        return work

    def tick(self, n: int, msg: str) -> None:
        self.done += n
        if self.progress:
            self.progress(min(self.done, self.total), self.total, msg)


def evaluate(ws, run, methods: Sequence[MethodRequest | str] = DEFAULT_METHODS, settings: Settings = Settings(),
             checks: Iterable[str] = CHECKS, *, device=None, progress: Progress | None = None) -> dict:
    """Run (or read from the cache) ``checks`` for ``methods`` on ``run``; returns :meth:`Evaluation.results`."""
    return Evaluation(ws, run, methods, settings).run_checks(checks, device=device, progress=progress)
