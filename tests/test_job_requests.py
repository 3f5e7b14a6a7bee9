"""Typed job requests: JSON round-trip and keys of every kind, the registry the worker runs, options the command
line derives from the fields, and a request submitted, run by the worker and found again by its key."""

from __future__ import annotations

import argparse
import dataclasses
import time

import pytest

from lib import jobs
from lib.cli import build_parser
from lib.cli import requests as cli_requests
from lib.reviews import auth

ADMIN = auth.Identity("tester", "admin")

# one request of each kind with fields away from their defaults (tuples, dicts, optional bools included)
SAMPLES = [
    jobs.BuildDemo(subjects=12, resolution=3.0, visits=1, seed=4, force=True, raw=True),
    jobs.Validate(table="/data/t.csv", no_images=True, report="/tmp/r.json"),
    jobs.CreateWorkspace(table="/data/t.csv", directory="/data/ws", resolution=4.0, data_root=("/a", "/b")),
    jobs.CohortMeans(),
    jobs.Train(name="x", model="rieke2018", epochs=3, lr=1e-3, class_weighted=False, seeds=(0, 1), folds=(2,)),
    jobs.Train(resume="r1"),
    jobs.Predict(run_id="r1"),
    jobs.Explain(run_id="r1", method="lrp", beta=0.5, params={"epsilon": 0.1}, target="HC", batch_size=2),
    jobs.GroupMeans(run_id="r1", store="abc", split="all", by="site"),
    jobs.RegionTables(run_ids=("r1", "r2"), betas=(0.0, 1.0), atlas="aal", merge=True),
    jobs.Biomarker(run_id="r1", betas=(0.0,), groups=("TP", "FP", "TN"), absolute=False, icv=True, permutations=99),
    jobs.EvaluateMaps(run_id="r1", methods=("lrp:beta=0", "gradcam"), checks=("aopc",), n_scans=2, sanity_threshold=0.3),
    jobs.Report(run_id="r1", pdf=True),
    jobs.RegistrationStudy(registrations=("none", "nonlinear"), seeds=(3, 4), epochs=2, resolution=2, workers=1),
    jobs.Preprocess(table="/data/raw.csv", out="/data/ws", registration="linear", resolution=3,
                    brain_extraction=False, workers=1, threads=2),
]


def test_every_kind_has_a_sample_an_action_a_summary_and_work():
    assert {type(r).kind for r in SAMPLES} == set(jobs.REGISTRY)
    for kind, cls in jobs.REGISTRY.items():
        assert cls.kind == kind and cls.summary, kind
        assert cls.action in auth.ACTIONS, kind
        assert cls.prepare is not jobs.Request.prepare, f"{kind} has no work"
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, kind
    for sample in SAMPLES:   # no field hides the methods the worker and the pages call
        assert all(callable(getattr(sample, m)) for m in ("run", "key", "prepare", "training_runs")), sample


@pytest.mark.parametrize("request_", SAMPLES, ids=lambda r: r.kind)
def test_json_round_trip_and_pure_keys(request_, tmp_path):
    from lib.data.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws")
    before = sorted(ws.root.rglob("*"))
    again = jobs.Request.from_json(request_.to_json())
    assert again == request_ and type(again) is type(request_)
    assert type(request_).from_dict(request_.to_dict()) == request_
    # keys name the work: the same for an equal request, different once a field that matters changes
    key = request_.key(ws)
    assert key == again.key(ws) and key.split(":")[0].split(" ")[0] == request_.kind
    assert request_.describe().startswith(request_.kind)
    assert sorted(ws.root.rglob("*")) == before   # computing a key wrote nothing


def test_keys_keep_their_meaning():
    from lib.data.workspace import Workspace

    ws = Workspace(root=__import__("pathlib").Path("/nonexistent"))
    assert jobs.BuildDemo(seed=3).key(ws) == "demo" and jobs.CohortMeans().key(ws) == "means"
    assert jobs.Predict(run_id="r").key(ws) == "predict:r" and jobs.Train(resume="r").key(ws) == "train:r"
    assert jobs.Validate().key(ws) == "validate"
    assert jobs.Validate(table="/data/x.csv").key(ws) == "validate /data/x.csv"
    assert jobs.CreateWorkspace(table="/data/x.csv").key(ws) == "init /data"
    assert jobs.Train(epochs=3).key(ws) != jobs.Train(epochs=4).key(ws)


def test_a_malformed_record_is_refused_with_its_reason():
    with pytest.raises(jobs.RequestError, match="unknown kind"):
        jobs.Request.from_dict({"kind": "nope"})
    with pytest.raises(jobs.RequestError, match="no field colour"):
        jobs.Request.from_dict({"kind": "predict", "run": "r", "colour": "red"})


def test_explain_and_group_means_keys_are_the_stores_and_groupings(demo_ws, demo_run):
    from lib.explain import heatmaps
    from lib.views import viewer

    request = jobs.Explain(run_id=demo_run.id, method="lrp", beta=0.0)
    assert request.key(demo_ws) == heatmaps.job_key(demo_ws, demo_run, "lrp", beta=0.0)
    store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    assert request.key(demo_ws) == f"explain:{store.folder.name}"
    table = viewer.selection(demo_run.predictions(), "all")
    by_store = jobs.GroupMeans(run_id=demo_run.id, store=store.folder.name, split="all", by="site")
    by_method = jobs.GroupMeans(run_id=demo_run.id, method="lrp", beta=0.0, split="all", by="site")
    assert by_store.key(demo_ws) == by_method.key(demo_ws) == \
        f"group-means:{viewer.grouping_key(store, table, 'site')}"


# --------------------------------------------------------------------------- command line derived from fields
def _options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {s for a in sub._actions for s in a.option_strings} | {a.dest for a in sub._actions
                                                                   if not a.option_strings}


# every option the hand-written parser declared for the commands that are jobs: command lines keep working
LEGACY = {
    "demo": "--subjects --resolution --visits --seed --workers --force",
    "validate": "table --no-images --report",
    "init": "directory --table --resolution --data-root --no-images",
    "train": "--resume --run-id --model --resolution --epochs --batch-size --lr --weight-decay --patience --flip-p "
             "--shift --normalisation --no-class-weights --seeds --folds",
    "predict": "--run",
    "explain": "--run --method --beta --param --atlas --target --batch-size --export --out --native",
    "evaluate-maps": "--run --methods --checks --split --scans --sanity-scans --seed --target --regions --cube-mm "
                     "--atlas --steps --replacement --blur-mm --order-score --output --random-repeats "
                     "--top-fraction --threshold --truth --min-loss --min-mm --tolerance-mm --batch-size",
    "regions": "--run --method --beta --param --store --atlas --merge --batch-size",
    "means": "",
    "group-means": "--run --store --method --beta --param --split --by",
    "biomarker": "--run --method --beta --param --store --split --group --side --metric --absolute --no-absolute "
                 "--volume --segmentation-column --labels --icv --atlas --one-per-subject --permutations --seed "
                 "--json",
    "report": "--run --out --pdf",
}


def test_every_option_of_the_hand_written_parser_is_still_there():
    parser = build_parser()
    for command, options in LEGACY.items():
        missing = set(options.split()) - _options(parser, command)
        assert not missing, f"{command} lost {missing}"


def test_options_come_from_the_fields():
    @dataclasses.dataclass(frozen=True)
    class Smoothed(jobs.Explain):
        noise_level: float = jobs.option(0.1, "σ of the added noise, as a share of the input's range")
        samples: tuple[int, ...] = jobs.option((8,), "samples per map")

    parser = argparse.ArgumentParser()
    cli_requests.add_options(parser, Smoothed)
    assert {"--noise-level", "--samples"} <= {s for a in parser._actions for s in a.option_strings}
    args = parser.parse_args(["--run", "r1", "--noise-level", "0.2", "--samples", "4", "16", "--param", "x=1",
                              "--beta", "0.5"])
    got = cli_requests.request_from_args(Smoothed, args)
    assert got == Smoothed(run_id="r1", beta=0.5, params={"x": 1}, noise_level=0.2, samples=(4, 16))
    defaults = cli_requests.request_from_args(Smoothed, parser.parse_args(["--run", "r1"]))
    assert defaults == Smoothed(run_id="r1")
    with pytest.raises(SystemExit):   # a field without default is a required option
        parser.parse_args([])


def test_a_command_line_and_its_request_are_the_same_job():
    parser = build_parser()
    args = parser.parse_args(["regions", "--run", "r1", "r2", "--beta", "0", "1", "--atlas", "aal", "--merge"])
    assert cli_requests.request_from_args(jobs.RegionTables, args) == SAMPLES[9]
    args = parser.parse_args(["train", "--run-id", "x", "--model", "rieke2018", "--epochs", "3", "--lr", "1e-3",
                              "--no-class-weights", "--seeds", "0", "1", "--folds", "2"])
    assert cli_requests.request_from_args(jobs.Train, args) == SAMPLES[4]
    args = parser.parse_args(["biomarker", "--run", "r1", "--beta", "0", "--group", "TP", "FP", "TN",
                              "--no-absolute", "--icv", "--permutations", "99"])
    assert cli_requests.request_from_args(jobs.Biomarker, args) == SAMPLES[10]


@pytest.mark.parametrize("request_", SAMPLES, ids=lambda r: r.kind)
def test_the_command_line_of_a_request_gives_the_request_back(request_):
    import shlex

    line = cli_requests.command_line(request_)
    assert line.startswith(f"python -m lib {request_.kind}")
    args = build_parser().parse_args(shlex.split(line)[3:])
    assert cli_requests.request_from_args(type(request_), args) == request_, line


# --------------------------------------------------------------------------- submitted, run by the worker, found
def _wait(ws, job_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(ws, job_id)
        if not job.active:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.state}")


def test_submitted_request_runs_in_the_worker_and_is_found_by_its_key(demo_ws):
    request = jobs.Validate(no_images=True)
    job = jobs.submit(demo_ws, request, who=ADMIN)
    assert job.record["request"] == request.to_dict() and job.record["executor"] == "local"
    assert job.record["command"] == "validate" and job.description == request.describe()
    # an equal request while it runs attaches to the same job, as a second browser tab does
    assert jobs.submit(demo_ws, jobs.Validate(no_images=True), who=ADMIN).id == job.id
    done = _wait(demo_ws, job.id)
    assert done.state == "done", (done.error, done.log_tail())
    assert done.request == request and done.message.startswith("0 errors")
    assert "validate no-images" in done.log_tail()
    assert jobs.for_request(demo_ws, request).id == job.id and jobs.find(demo_ws, request.key(demo_ws)).id == job.id
    assert jobs.for_request(demo_ws, request, active=True) is None


def test_jobs_of_a_run_are_found_by_their_request(tmp_path, monkeypatch):
    import subprocess

    from lib.data.workspace import Workspace
    from lib.jobs import executor

    class Sleeper(executor.LocalProcessExecutor):
        def start(self, ws, job_id, request):
            self.proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
            return {"pid": self.proc.pid}

    sleeper = Sleeper()
    monkeypatch.setitem(executor.EXECUTORS, "local", sleeper)
    ws = Workspace.create(tmp_path / "ws")
    try:
        job = jobs.submit(ws, jobs.RegionTables(run_ids=("a", "b")), who=ADMIN)
        assert [j.id for j in jobs.of_run(ws, "b", "regions")] == [job.id]
        assert jobs.of_run(ws, "c", "regions") == [] and jobs.of_run(ws, "b", "explain") == []
    finally:
        sleeper.proc.kill()
        sleeper.proc.wait()


def test_a_record_whose_request_cannot_be_read_fails_in_the_worker(tmp_path):
    from lib.core import atomic
    from lib.data.workspace import Workspace
    from lib.jobs import worker

    ws = Workspace.create(tmp_path / "ws")
    (ws.jobs_dir / "j1").mkdir(parents=True)
    atomic.write_json(ws.jobs_dir / "j1" / "status.json", {"id": "j1", "state": "queued",
                                                            "request": {"kind": "nope"}})
    assert worker.run(str(ws.root), "j1") == 1
    assert jobs.get(ws, "j1").state == "failed" and "unknown kind" in jobs.get(ws, "j1").error
