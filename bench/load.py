"""A lab on the team server: N concurrent Chromium users on the demo workspace, time per step.

    .venv/bin/python bench/load.py [--users 1 3 10] [--rounds 2] [--workspace DIR] [--think S] [--arrivals S]
        [--returning] [--busy] [--baseline CHECKOUT]

Each level N starts ``streamlit run app.py`` afresh (loopback only) on a demo workspace whose heatmaps, region
tables and predictions are cached, lets one user walk the scenario once to warm the server, then starts N
headless Chromium users at once (one browser, a context each). Every user loads the app once ("App load": the
browser fetches and starts Streamlit's bundle; plotly's follows while the first page is shown), then
``--rounds`` times: opens Heatmaps from the sidebar, switches to the Individual view, clicks "Next ▶" three
times, then opens Atlas metrics, Biomarkers and the
Dataset overview from the sidebar. A step ends when its content is drawn and the app is idle (no running
script, no stale element) for 150 ms; its time is from the click to the moment it became ready. An exception
shown on the page or a step past ``--timeout`` counts as an error. ``--think S``: a user reads each page for
0.5–1.5 × S seconds before the next click (default 0: every user clicks as soon as a step is ready, a stress
test no lab reaches). ``--arrivals S``: the users open the app one after another over S seconds, as a lab's
members do over a morning (default: 0.25 s apart).

Prints p50/p95/max per step kind for each N side by side, also over "revisits" (the steps of every round
after the first: pages the browser has opened before, with their script bundles such as plotly's loaded), the
server's peak resident memory (VmHWM), the server's CPU seconds per step and its share of the cores (the rest
of a step's time is the browsers, the network and the machine's other load), and the errors. With
``--baseline`` (another checkout of the app, e.g. ``git archive main | tar -x -C DIR``), the same levels run on
it too, in the same run, and the ratio of the p95s is printed. The browsers share the machine's cores with the
server, as a lab's server would not: each user's browser runs on that user's own computer.

``--workspace``: an existing demo workspace (default: built once under /tmp/relevance-atlas-load/demo with the
shipped demo model, its predictions, LRP β = 0 and guided backprop heatmaps and their region tables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WS = Path("/tmp/relevance-atlas-load/demo")
STEPS = ["App load", "Heatmaps open", "Individual view", "Next ▶", "Atlas metrics open", "Biomarkers open", "Overview open"]

# ready: the app runs no script and shows nothing stale, and the step's content is there (MARK, a JS expression)
READY = """async ([mark, quiet]) => {
  const idle = () => !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')
      && !document.querySelector('[data-testid="stStatusWidgetRunningManIcon"]')
      && !document.querySelector('[data-stale="true"]');
  const text = () => (document.querySelector('[data-testid="stMain"]') || document.body).innerText;
  const ok = () => { try { return idle() && eval(mark); } catch (e) { return false; } };
  return await new Promise(resolve => {
    let since = null;
    const tick = () => {
      const now = performance.now();
      if (ok()) { if (since === null) since = now; if (now - since >= quiet) return resolve(now - since); }
      else since = null;
      setTimeout(tick, 20);
    };
    tick();
  });
}"""
QUIET_MS = 150
WARM = "revisits"   # every step of the rounds after the first: pages this browser has opened before


def has(text: str) -> str:
    return f"text().includes({text!r})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(ws: Path) -> None:
    """The default demo with the shipped model's predictions, heatmaps and region tables (cached: quick again)."""
    py = [sys.executable, "-m", "lib", "--workspace", str(ws)]

    def run(*args):
        print("·", " ".join(args), flush=True)
        done = subprocess.run([*py, *args], cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")

    if not (ws / "cohort.csv").exists():
        run("demo")
    subprocess.run([sys.executable, "-c", "import sys; from lib.data.workspace import Workspace; "
                    "from lib.learn.training import install_shipped_run, shipped_models; "
                    "ws = Workspace.open(sys.argv[1]); [install_shipped_run(ws, f) for f in shipped_models()]",
                    str(ws)], cwd=ROOT, check=True)
    if not (ws / "runs" / "demo-boehle2019" / "predictions.csv").exists():
        run("predict", "--run", "demo-boehle2019")
    run("regions", "--run", "demo-boehle2019", "--method", "lrp", "--beta", "0")
    run("regions", "--run", "demo-boehle2019", "--method", "guided_backprop")
    run("means")


class Server:
    """``streamlit run app.py`` of ``checkout`` on a free loopback port; peak memory from /proc."""

    def __init__(self, checkout: Path, ws: Path):
        self.port = _free_port()
        env = {**os.environ, "RELEVANCE_ATLAS_WORKSPACE": str(ws)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit of {checkout} did not start")

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds the server has used (user + system, all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)


async def _step(page, kind: str, action, mark: str, times: dict, errors: list, timeout_s: float) -> None:
    start = time.perf_counter()
    try:
        await action()
        ago_ms = await asyncio.wait_for(page.evaluate(READY, [mark, QUIET_MS]), timeout_s)
        elapsed = time.perf_counter() - start - ago_ms / 1000
        if await page.locator('[data-testid="stException"]').count():
            errors.append(f"{kind}: exception on the page")
        times.setdefault(kind, []).append(max(elapsed, 0.0))
    except Exception as exc:  # noqa: BLE001 - a timeout or a missing control is an error of this step
        errors.append(f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")


async def _user(browser, url: str, rounds: int, delay: float, times: dict, errors: list, timeout_s: float,
                think: float = 0.0, seed: int = 0) -> None:
    """One lab member: loads the app once (its own step: the browser fetches and starts Streamlit's bundle),
    then walks the scenario ``rounds`` times, moving between pages by the sidebar as a user does. ``think``:
    seconds between clicks (uniform between half and one and a half times it), a person reading the page."""
    rng = random.Random(seed)
    await asyncio.sleep(delay)
    context = await browser()
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    sidebar = page.locator('[data-testid="stSidebar"]')

    revisit = False   # the first round opens every page for the first time in this browser; later ones revisit

    async def step(kind, action, mark):
        mine: dict = {}
        await _step(page, kind, action, mark, mine, errors, timeout_s)
        for t in mine.get(kind, []):
            times.setdefault(kind, []).append(t)
            if revisit:
                times.setdefault(WARM, []).append(t)
        if think:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * think)

    await step("App load", lambda: page.goto(f"{url}/?run=demo-boehle2019"), has("By diagnosis"))
    for r in range(rounds):
        revisit = r > 0
        await step("Heatmaps open", lambda: sidebar.get_by_role("link", name="Heatmaps").click(),
                   "document.querySelectorAll('[data-testid=\"stImage\"]').length > 0 && " + has("MNI ("))
        if await page.get_by_role("radio", name="Individual", exact=True).is_checked():
            await page.get_by_role("radio", name="Groups", exact=True).click()   # the page kept the last view
            await page.evaluate(READY, [has("MNI ("), QUIET_MS])
        await step("Individual view", lambda: page.get_by_role("radio", name="Individual", exact=True).click(),
                   has("Scan 1 of") + " && " + has("AD score"))
        for k in range(2, 5):
            await step("Next ▶", lambda: page.get_by_role("button", name="Next ▶").click(),
                       f"/Scan {k} of \\d+/.test(text())")
        for kind, link, mark in (
                ("Atlas metrics open", "Atlas metrics",
                 has("One region") + " && document.querySelectorAll('.js-plotly-plot').length > 0"),
                ("Biomarkers open", "Biomarkers",
                 has("True positives") + " && document.querySelectorAll('.js-plotly-plot').length > 0"),
                ("Overview open", "Dataset overview", has("By diagnosis"))):
            await step(kind, lambda link=link: sidebar.get_by_role("link", name=link).click(), mark)
    await context.close()


async def _level(server: Server, users: int, rounds: int, timeout_s: float, think: float = 0.0,
                 returning: bool = False, arrivals: float = 0.0) -> tuple[dict, list, float, float]:
    """(times per step, errors, server CPU seconds, wall seconds) of the measured part (after the warm-up)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        exe = shutil.which("chromium")
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
        viewport = {"width": 1400, "height": 1000}
        browser = await p.chromium.launch(executable_path=exe, args=args)
        url = server.url

        def fresh():   # a first visit: a new context has an empty cache
            return browser.new_context(viewport=viewport)

        warm_times, warm_errors = {}, []
        await _user(fresh, url, 1, 0.0, warm_times, warm_errors, max(timeout_s, 300))   # fills the server's caches
        profiles = []
        if returning:   # each member's own browser profile, which has opened the app before (its disk cache and
            # V8's code cache hold Streamlit's and plotly's bundles, as a lab member's browser does the next day)
            root = Path(tempfile.mkdtemp(prefix="load-profiles-"))
            profiles = [root / f"user{i}" for i in range(users)]

            def profile(i):
                return lambda: p.chromium.launch_persistent_context(profiles[i], executable_path=exe, args=args,
                                                                    viewport=viewport)
            for i in range(users):   # one at a time: their first visit is not measured
                await _user(profile(i), url, 1, 0.0, {}, warm_errors, max(timeout_s, 300))
        times, errors = {}, []
        cpu0, wall0 = server.cpu_s(), time.perf_counter()
        gap = max(0.25, arrivals / users)   # users open the app one after another, `gap` seconds apart
        await asyncio.gather(*(_user(profile(i) if returning else fresh, url, rounds, gap * i, times, errors,
                                     timeout_s, think, seed=i) for i in range(users)))
        cpu, wall = server.cpu_s() - cpu0, time.perf_counter() - wall0
        await browser.close()
        if profiles:
            shutil.rmtree(profiles[0].parent, ignore_errors=True)
    return times, [f"warm-up {e}" for e in warm_errors] + errors, cpu, wall


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


class BusyTraining:
    """A lab member's training job, submitted as the Training page submits it (a background process at the
    jobs' niceness), running while the users walk; cancelled at the end."""

    def __init__(self, ws: Path, checkout: Path):
        self.ws, self.checkout, self.job = ws, checkout, None

    def _call(self, code: str) -> str:
        return subprocess.run([sys.executable, "-c", code, str(self.ws)], cwd=self.checkout, check=True,
                              capture_output=True, text=True).stdout.strip()

    def __enter__(self):
        self.job = self._call(
            "import sys, time; from lib.data.workspace import Workspace; from lib import jobs; from lib.cli.admin import cli_identity\n"
            "ws = Workspace.open(sys.argv[1])\n"
            "j = jobs.submit(ws, jobs.Train(name=f'load-busy-{time.time_ns()}', epochs=500, patience=500), who=cli_identity())\n"
            "print(j.id)")
        time.sleep(20)   # past the job's start-up: its epochs are running when the users start
        return self

    def __exit__(self, *exc):
        self._call("import sys, time; from lib.data.workspace import Workspace; from lib import jobs; from lib.cli.admin import cli_identity\n"
                   f"ws = Workspace.open(sys.argv[1]); jobs.cancel(ws, {self.job!r}, who=cli_identity())\n"
                   f"while jobs.get(ws, {self.job!r}).active: time.sleep(0.5)")
        for run in (self.ws / "runs").glob("load-busy-*"):   # the pages' default run stays the demo's
            shutil.rmtree(run, ignore_errors=True)


def measure(checkout: Path, ws: Path, levels, rounds: int, timeout_s: float, think: float = 0.0,
            busy: bool = False, returning: bool = False, arrivals: float = 0.0) -> dict:
    out = {}
    for n in levels:
        server = Server(checkout, ws)
        try:
            with BusyTraining(ws, checkout) if busy else contextlib.nullcontext():
                times, errors, cpu, wall = asyncio.run(_level(server, n, rounds, timeout_s, think, returning,
                                                                   arrivals))
            steps = sum(len(v) for v in times.values())
            out[n] = {"times": times, "errors": errors, "peak_mb": server.peak_mb(),
                      "server_cpu_per_step": cpu / max(steps, 1), "server_cpu_share": cpu / wall / (os.cpu_count() or 1)}
        finally:
            server.stop()
        all_t = [t for v in times.values() for t in v]
        print(f"  {checkout.name}: {n} user(s): p95 {_q(all_t, 0.95):.2f} s, {len(errors)} error(s)", flush=True)
    return out


def _of(res: dict, n: int, kind: str) -> list[float]:
    times = res[n]["times"]
    return [x for k, v in times.items() if k != WARM for x in v] if kind == "every step" else times.get(kind, [])


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{_q(values, 0.5):.2f} / {_q(values, 0.95):.2f} / {max(values):.2f}"


def report(name: str, res: dict) -> None:
    levels = list(res)
    head = f"{'step':<20}" + "".join(f"{'N=%d  p50 / p95 / max (s)' % n:>32}" for n in levels)
    print(f"\n{name}\n{head}\n" + "-" * len(head))
    for kind in STEPS + ["every step", WARM]:
        print(f"{kind:<20}" + "".join(f"{_cell(_of(res, n, kind)):>32}" for n in levels))
    print(f"{'server peak memory':<20}" + "".join(f"{'%.0f MB' % res[n]['peak_mb']:>32}" for n in levels))
    print(f"{'server CPU per step':<20}" + "".join(f"{'%.2f s' % res[n]['server_cpu_per_step']:>32}" for n in levels))
    print(f"{'server CPU share':<20}" + "".join(f"{'%.0f %% of the cores' % (100 * res[n]['server_cpu_share']):>32}"
                                                for n in levels))
    print(f"{'errors':<20}" + "".join(f"{len(res[n]['errors']):>32}" for n in levels))
    for n in levels:
        for e in res[n]["errors"][:10]:
            print(f"  N={n}: {e}")


def ratios(base: dict, this: dict, levels) -> None:
    print("\np95 ratio, baseline ÷ this checkout (× faster)")
    for kind in STEPS + ["every step", WARM]:
        cells = []
        for n in levels:
            b, t = _q(_of(base, n, kind), 0.95), _q(_of(this, n, kind), 0.95)
            cells.append(f"{'N=%d: %.1f×' % (n, b / t) if t > 0 else 'N=%d: —' % n:>16}")
        print(f"{kind:<20}" + "".join(cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--rounds", type=int, default=2, help="scenarios per user")
    ap.add_argument("--workspace", type=Path, default=DEFAULT_WS)
    ap.add_argument("--baseline", type=Path, help="another checkout of the app, measured in the same run")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds a user reads between clicks (0: click as soon as a step is ready, a stress test)")
    ap.add_argument("--returning", action="store_true",
                    help="every user's browser has opened the app before (its own profile, caches warm); "
                         "default: a first visit, every cache empty")
    ap.add_argument("--busy", action="store_true",
                    help="a training job of the workspace runs in the background while the users walk")
    ap.add_argument("--arrivals", type=float, default=0.0,
                    help="seconds over which the users open the app, one after another (default: all within "
                         "0.25 s each, a stress test)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a step counts as an error")
    args = ap.parse_args()
    if not shutil.which("chromium"):
        print("Debian's chromium is needed (apt-get install chromium)", file=sys.stderr)
        return 2
    ws = args.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    prepare(ws)
    how = dict(think=args.think, busy=args.busy, returning=args.returning, arrivals=args.arrivals)
    results = {"this checkout": measure(ROOT, ws, args.users, args.rounds, args.timeout, **how)}
    if args.baseline:
        results["baseline"] = measure(args.baseline.resolve(), ws, args.users, args.rounds, args.timeout, **how)
    for name, res in results.items():
        report(f"{name} ({ROOT if name == 'this checkout' else args.baseline})", res)
    if args.baseline:
        ratios(results["baseline"], results["this checkout"], args.users)
    return 1 if any(r[n]["errors"] for r in results.values() for n in r) else 0


if __name__ == "__main__":
    sys.exit(main())
