"""Jobs on heatmaps: explain every scan of a run, average them per group, sum them per atlas region."""

from __future__ import annotations

from dataclasses import dataclass

from lib.data.atlases import DEFAULT_ATLAS, shipped_atlases
from lib.data.classes import DEFAULT_CLASSES
from lib.data.workspace import Workspace
from lib.jobs.kinds.common import SPLITS, given, load_run, parse_params
from lib.jobs.request import Request, RequestError, Task, digest, option, register


@register
@dataclass(frozen=True)
class Explain(Request):
    kind = "explain"
    action = "compute"
    summary = "heatmaps of every scan of a run's cohort (cached; resumes if interrupted)"

    run_id: str = option(help="training run", flag="run")
    method: str = option("lrp", "an explanation method of the catalogue, lib.explain.METHODS (lrp, smoothgrad, …)")
    beta: float | None = option(None, "LRP β (α = 1 + β); 0 is the paper's default")
    params: dict = option(dict, "any method parameter (repeatable)", flag="param", metavar="KEY=VALUE",
                          append=True, parse=parse_params)
    atlas: str | None = option(None, f"atlas of a method that needs one (default {DEFAULT_ATLAS})")
    target: str | None = option(None, "explained class (default: the run's positive class, "
                                      f"{DEFAULT_CLASSES.positive} in the paper)")
    batch_size: int = option(4)

    def method_params(self) -> dict:
        return given(self.params, beta=self.beta, atlas=self.atlas)

    def key(self, ws: Workspace) -> str:
        """``explain:`` and the store's folder: the key of the maps this request computes."""
        from lib.explain.heatmaps import job_key

        try:
            run = load_run(ws, self.run_id)
        except RequestError:   # the job fails saying so; its key is the request's own
            return super().key(ws)
        return job_key(ws, run, self.method, self.target, **self.method_params())

    def describe(self) -> str:
        p = self.method_params()
        return " ".join(["explain", self.method, *(f"{k}={v}" for k, v in sorted(p.items())), "· run", self.run_id])

    def prepare(self, ws: Workspace) -> Task:
        from lib.explain import heatmaps

        run = load_run(ws, self.run_id)
        params = self.method_params()
        result = {}

        def work(progress):
            reports = []   # a cached store is returned without a single progress report

            def tick(done, total, message):
                reports.append(done)
                progress(done, total, message)

            store = heatmaps.compute_store(ws, run, self.method, target=self.target, batch_size=self.batch_size,
                                           progress=tick, **params)
            result.update(store=store, run=run, cached=not reports)
            return f"{len(store)} heatmaps in {store.folder}" + (" (cached)" if not reports else "")

        return Task(work, result)


@register
@dataclass(frozen=True)
class GroupMeans(Request):
    kind = "group-means"
    action = "compute"
    summary = "average heatmaps per class and outcome TP, FP, TN, FN (and subgroups) for the heatmap page; cached"

    run_id: str = option(help="training run", flag="run")
    store: str | None = option(None, "heatmap store (its folder name under cache/heatmaps)")
    method: str = option("lrp", "or pick the store by method and parameters")
    beta: float | None = option(None)
    params: dict = option(dict, flag="param", metavar="KEY=VALUE", append=True, parse=parse_params)
    split: str = option("test", choices=SPLITS)
    by: str | None = option(None, "subgroups", choices=("split", "site", "sex", "visit"))

    def _store(self, ws: Workspace, run):
        from lib.explain import heatmaps
        from lib.views import viewer

        if self.store:
            try:
                return viewer.store_by_key(ws, run, self.store)
            except KeyError as exc:
                raise RequestError(exc.args[0]) from exc
        params = given(self.params, beta=self.beta)
        store = heatmaps.find_store(ws, run, self.method, **params)
        if store is None:
            raise RequestError(f"no heatmaps of run {run.id} with {self.method} {params or ''}: "
                               "compute them first with python -m lib explain")
        return store

    def key(self, ws: Workspace) -> str:
        """``group-means:`` and the grouping's content key (the store and every group's members)."""
        from lib.views import viewer

        try:
            run = load_run(ws, self.run_id)
            store = self._store(ws, run)
        except RequestError:   # the job fails saying so; its key is the request's own
            return super().key(ws)
        table = viewer.selection(run.predictions(), self.split)
        by = viewer.SUBGROUPS.get(self.by) if self.by else None
        return f"group-means:{viewer.grouping_key(store, table, by, run.classes)}"

    def prepare(self, ws: Workspace) -> Task:
        from lib.views import viewer

        run = load_run(ws, self.run_id)
        store = self._store(ws, run)

        def work(progress):
            try:
                means = viewer.run_group_means(ws, run, store, split=self.split, by=self.by, progress=progress)
            except ValueError as exc:
                raise RequestError(str(exc)) from exc
            return f"{sum(e.count > 0 for e in means.entries)} group means in {means.folder}"

        return Task(work)


@register
@dataclass(frozen=True)
class RegionTables(Request):
    kind = "regions"
    action = "compute"
    summary = "relevance per atlas region (sum, density, fraction) of every scan, cached; heatmaps computed if " \
              "missing"

    run_ids: tuple[str, ...] = option(help="one run, or several (e.g. the repeats of a group)", flag="run")
    method: str = option("lrp")
    betas: tuple[float, ...] | None = option(None, "LRP β values (one table per run × β)", flag="beta")
    params: dict = option(dict, "any method parameter (repeatable)", flag="param", metavar="KEY=VALUE",
                          append=True, parse=parse_params)
    stores: tuple[str, ...] | None = option(None, "finished heatmap stores of the first run, by folder name, "
                                                  "instead of --method", flag="store")
    atlas: str = option(DEFAULT_ATLAS,
                        f"{', '.join(shipped_atlases())} (the first is the default) or a workspace atlas")
    merge: bool = option(False, "merge left and right regions")
    batch_size: int = option(4, "scans per pass when heatmaps are computed")

    def canonical(self) -> dict:
        """What the tables depend on: parameters at their method's defaults and β given twice left out."""
        from lib.explain import canonical_params

        out = {"runs": list(self.run_ids), "atlas": self.atlas, "merge": self.merge}
        if self.stores:
            return {**out, "stores": list(self.stores)}
        try:
            defaults = canonical_params(self.method)
        except (KeyError, TypeError, ValueError):
            defaults = {}
        params = {k: v for k, v in self.params.items() if k != "method" and (k not in defaults or defaults[k] != v)
                  and not (k == "beta" and self.betas)}
        betas = [float(b) for b in self.betas] if self.betas else None
        return {**out, "method": self.method, "params": params, "betas": betas}

    def key(self, ws: Workspace) -> str:
        """Equal requests share a job: ``regions:`` and a hash of :meth:`canonical`."""
        return f"regions:{digest(self.canonical())}"

    def prepare(self, ws: Workspace) -> Task:
        from lib.analysis import region_tables
        from lib.data.atlas import AtlasError
        from lib.explain import heatmaps

        runs = [load_run(ws, r) for r in self.run_ids]
        try:
            atlas = region_tables.get_atlas(ws, self.atlas, runs[0].grid.resolution, self.merge)
        except (AtlasError, KeyError, ValueError) as exc:
            raise RequestError(exc.args[0] if exc.args else str(exc)) from exc
        if self.stores:
            by_name = {s.folder.name: s for s in heatmaps.list_stores(ws, runs[0])}
            missing = [k for k in self.stores if k not in by_name]
            if missing:
                raise RequestError(f"no finished heatmap store {missing} of run {runs[0].id}")
            tasks = [(runs[0], by_name[k]) for k in self.stores]
        else:
            params = dict(self.params)
            betas = list(self.betas) if self.betas else [params.pop("beta")] if "beta" in params else [None]
            tasks = [(r, self.method, given(params, beta=b)) for r in runs for b in betas]
        result = {}

        def work(progress):
            result["paths"] = region_tables.compute_many(ws, tasks, atlas, progress=progress,
                                                              batch_size=self.batch_size)
            return f"{len(result['paths'])} region table(s) on {atlas.name}"

        return Task(work, result)

