"""The fuzz campaign (issue 34, item 1): tests/test_fuzz.py's strategies and runners, longer and with random
seeds, and the survival scenario of tests/test_survival.py measured.

    .venv/bin/python benchmarks/fuzz_campaign.py                 # the committed run (about 9 min on 2 cores)
    .venv/bin/python benchmarks/fuzz_campaign.py --scale 0.05    # a quick look (nothing written without --out)

Each door (`test_fuzz.RUNNERS`: NIfTI volumes, features.csv tables, zips, TorchScript files, JSON cards, MONAI
bundles, command lines) is explored by hypothesis for `EXAMPLES[door] * --scale` inputs (generation only: no
shrinking, nothing fails). Then the doors a test draws few of: uploaded models through the child-process check
(`zoo.screen`: models that spin, hoard, raise, return NaN...), the app's uploaders (`test_fuzz.run_app_cases`),
and the survival scenario.

Written to `benchmarks/results/fuzz.json` (or `--out`): per door the inputs tried (counted by what was generated),
how each ended (accepted and checked / refused with a message / crashed / wrong), the messages given most
often, the crashes with their input, the wall time, and memory: the process's peak (`ru_maxrss`) after the door,
and the most any single input raised the resident memory above where it started (sampled every 5 ms while it
ran). Every crash is also printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_fuzz as fz  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from engine.models.zoo import wait_for_model_checks  # noqa: E402

EXAMPLES = {"nifti": 1500, "csv": 1500, "zip": 1000, "torchscript": 600, "card": 3000, "bundle": 300, "cli": 300}
OUT = ROOT / "benchmarks" / "results" / "fuzz.json"
MB = 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MB


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Sampler:
    """Resident memory sampled every 5 ms in a thread; `start()` begins a new window, `peak` is its largest."""

    def __init__(self):
        self.peak, self._lock = 0.0, threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            now = rss_mb()
            with self._lock:
                self.peak = max(self.peak, now)
            time.sleep(0.005)

    def start(self) -> float:
        now = rss_mb()
        with self._lock:
            self.peak = now
        return now


class Tally:
    """What one door was given and how each input ended."""

    def __init__(self, door: str):
        self.door, self.outcomes, self.labels, self.messages = door, Counter(), Counter(), Counter()
        self.crashes, self.wrong, self.slowest, self.growth = [], [], (0.0, ""), (0.0, "")
        self.maxrss = maxrss_mb()
        self.started = time.perf_counter()

    def add(self, label: str, outcome, seconds: float, growth_mb: float) -> None:
        self.outcomes[outcome.status] += 1
        self.labels.update(label.split(" | "))
        if outcome.status == "refused":
            self.messages[" ".join(outcome.detail.split()[:9])] += 1
        elif outcome.status in ("crashed", "wrong"):
            (self.crashes if outcome.status == "crashed" else self.wrong).append(
                {"input": label, "what": outcome.detail}
            )
            print(f"  {outcome.status.upper()} {self.door}: {label}: {outcome.detail}", flush=True)
        if seconds > self.slowest[0]:
            self.slowest = (seconds, label)
        if growth_mb > self.growth[0]:
            self.growth = (growth_mb, label)
        if maxrss_mb() > self.maxrss + 100:  # the process's peak rose by more than the sampler saw: say which input
            self.growth = max(self.growth, (maxrss_mb() - self.maxrss, f"{label} (ru_maxrss)"))
        self.maxrss = maxrss_mb()

    def report(self) -> dict:
        return {
            "inputs": sum(self.outcomes.values()),
            "accepted": self.outcomes["accepted"],
            "refused": self.outcomes["refused"],
            "crashed": self.outcomes["crashed"],
            "wrong": self.outcomes["wrong"],
            "seconds": round(time.perf_counter() - self.started, 1),
            "slowest_input_s": round(self.slowest[0], 2),
            "slowest_input": self.slowest[1],
            "largest_rss_growth_mb": round(self.growth[0], 1),
            "largest_rss_growth_input": self.growth[1],
            "peak_rss_mb_after": round(maxrss_mb(), 1),
            "inputs_by_kind": dict(self.labels.most_common(60)),
            "kinds_tried": len(self.labels),
            "messages_most_given": dict(self.messages.most_common(12)),
            "crashes": self.crashes,
            "wrong_answers": self.wrong,
        }


def timed(tally: Tally, sampler: Sampler, label: str, run) -> None:
    before = sampler.start()
    started = time.perf_counter()
    outcome = run()
    time.sleep(0.006)  # one more sample
    tally.add(label, outcome, time.perf_counter() - started, sampler.peak - before)


def harnessed(runner, case, root: Path):
    """The runner's outcome; an exception of the runner's own checks is recorded as one, never stops the run."""
    try:
        return runner(case, root)
    except Exception as exc:
        return fz.Outcome("wrong", f"the harness failed: {fz.crash_detail(exc)}")


def explore(door: str, n: int, root: Path, sampler: Sampler, base_seed: int, strategy=None) -> dict:
    """Hypothesis draws `n` inputs for `door` (generation only), each run through the door's runner."""
    tally = Tally(door)
    strategy = strategy or fz.STRATEGIES[door]

    @seed(base_seed)
    @settings(
        max_examples=n, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy)
    def run(case):
        timed(tally, sampler, case.label, lambda: harnessed(fz.RUNNERS[door], case, root))

    run()
    return tally.report()


def hundred_thousand_rows(root: Path, sampler: Sampler) -> dict:
    """A features.csv of 100,000 good rows (the same two volumes under 100,000 subjects) loaded whole:
    every row's header read and checked."""
    from engine.data.dataset import load_dataset

    folder = fz.fresh(root)
    for name in ("a.nii.gz", "b.nii.gz"):
        (folder / name).write_bytes(fz.good_volume())
    lines = ["file,subject,age"] + [f"{'ab'[i % 2]}.nii.gz,s{i},{i % 90}" for i in range(100_000)]
    (folder / "features.csv").write_text("\n".join(lines) + "\n")
    tally = Tally("csv-100k")
    timed(
        tally, sampler, "100,000 good rows", lambda: fz.attempt(lambda: fz.check_dataset(load_dataset(folder), 100_000))
    )
    return tally.report()


def uploaded_models(root: Path, sampler: Sampler, repeat: int) -> dict:
    """Every model of `test_fuzz.MODELS`, and models that spin forever or hoard memory, uploaded: `zoo.load`
    of an uploaded file, which checks it in a child process (`zoo.screen`) before this process runs it."""
    import os

    from engine.cards import ModelRef
    from engine.models.zoo import load

    os.environ["EVE_MODEL_CHECK_S"], os.environ["EVE_MODEL_CHECK_MB"] = "5", "2048"
    models = [*fz.MODELS, fz.SpinsForever, fz.Hoards] * repeat
    tally = Tally("uploaded-model")
    for model in models:
        path = root / f"{model.__name__}.pt"
        path.write_bytes(fz.scripted(model))
        ref = ModelRef.torchscript(path, fz.MODEL_SPEC, uploaded=True)
        timed(tally, sampler, model.__name__, lambda ref=ref: fz.attempt(lambda: load(ref, "cpu")))
    report = tally.report()
    report["limits"] = {"EVE_MODEL_CHECK_S": 5, "EVE_MODEL_CHECK_MB": 2048}
    del os.environ["EVE_MODEL_CHECK_S"], os.environ["EVE_MODEL_CHECK_MB"]
    return report


def screen_cost(root: Path, repeat: int = 5) -> dict:
    """What the child-process check costs an upload: `zoo.load` of the same small model as an upload (checked
    in a child first) and as the CLI loads a file (checked in this process only), medians of `repeat`."""
    from engine.cards import ModelRef
    from engine.models.zoo import load

    path = root / "mean.pt"
    path.write_bytes(fz.scripted(fz.Mean))
    times = {}
    for uploaded in (False, True):
        ref = ModelRef.torchscript(path, fz.MODEL_SPEC, uploaded=uploaded)
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            load(ref, "cpu")
            runs.append(time.perf_counter() - started)
        times["uploaded (child check, then in-process)" if uploaded else "in-process check only"] = round(
            statistics.median(runs), 3
        )
    return {"median_s": times, "repeat": repeat, "model": "Mean, a (2, 1, 16, 16) dummy batch"}


def app_door(sampler: Sampler) -> dict:
    tally = Tally("app")
    before = sampler.start()
    started = time.perf_counter()
    results = fz.run_app_cases()
    for label, outcome in results:
        tally.add(label, outcome, 0.0, 0.0)
    tally.slowest = (time.perf_counter() - started, "all of them, one after another")
    tally.growth = (sampler.peak - before, "all of them, one after another")
    return tally.report()


def survival() -> dict:
    """tests/test_survival.py's scenario, measured: a session reruns the browse page alone, then while another
    session's upload of a zip bomb, a volume claiming 10^9 voxels, a model that spins forever and one that hoards
    memory is refused (limits of 3 s and 1024 MB); its rerun times, the upload's answer time, the memory."""
    import os

    import test_survival as sv

    from components import state

    os.environ["EVE_MODEL_CHECK_S"], os.environ["EVE_MODEL_CHECK_MB"] = str(sv.CHECK_S), str(sv.CHECK_MB)
    worker = sv._worker()
    stop = threading.Event()
    stop.set()
    alone = sv._keeps_working(worker, stop, at_least=6)
    result = {"worker_rerun_alone_s": {"median": round(statistics.median(alone), 2), "max": round(max(alone), 2)}}
    bomber = sv._app("shapes")
    bomber.sidebar.radio(key=state.DATASET).set_value("upload").run()
    uploader = sv._app("shapes")
    uploader.sidebar.selectbox(key=state.keyed(state.MODEL, "shapes")).set_value(state.UPLOADED_MODEL).run()
    cases = {
        "zip bomb (320 MiB of zeros in 0.3 MB)": (bomber, state.DATASET_UPLOAD, [("cohort.zip", sv._bomb_zip(), "x")]),
        "volume claiming 10^9 voxels": (
            bomber,
            state.DATASET_UPLOAD,
            [("features.csv", b"file,size\nbig.nii.gz,1\n", "x"), ("big.nii.gz", sv._claims_a_billion_voxels(), "x")],
        ),
        "model that spins forever": (uploader, state.MODEL_UPLOAD, ("s.pt", sv._torchscript(fz.SpinsForever()), "x")),
        "model that hoards memory": (uploader, state.MODEL_UPLOAD, ("h.pt", sv._torchscript(fz.Hoards()), "x")),
    }
    for name, (at, key, files) in cases.items():
        before = sv._state_of(worker)
        rss = sv._rss_mb()
        with sv._Peak() as peak:
            times, took = sv._meanwhile(
                lambda at=at, key=key, files=files: at.sidebar.file_uploader(key=key).set_value(files).run(), worker
            )
        result[name] = {
            "message": " ".join(e.value for e in at.sidebar.error)[:160],
            "exception_reached_the_page": bool(at.exception),
            "answer_s": round(took, 2),
            "worker_reruns": len(times),
            "worker_rerun_s": {"median": round(statistics.median(times), 2), "max": round(max(times), 2)},
            "worker_state_kept": sv._state_of(worker) == before,
            "server_rss_growth_mb": round(peak.peak - rss, 1),
        }
        print(f"  survival: {name}: {result[name]}", flush=True)
    del os.environ["EVE_MODEL_CHECK_S"], os.environ["EVE_MODEL_CHECK_MB"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="inputs per door = EXAMPLES x scale (default 1)")
    parser.add_argument("--seed", type=int, default=34, help="hypothesis seed of the first door (default 34)")
    parser.add_argument("--doors", default=",".join(EXAMPLES), help="comma-separated doors (default all)")
    parser.add_argument("--no-extras", action="store_true", help="only the doors: no uploads, app, survival")
    parser.add_argument("--out", default=None, help=f"where to write (default {OUT.relative_to(ROOT)} at --scale 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("nibabel", "nibabel.global"):  # its header fixes, one line each, for every mutation
        logging.getLogger(name).setLevel(logging.ERROR)
    sampler = Sampler()
    started = time.perf_counter()
    report = {"machine": describe(), "scale": args.scale, "seed": args.seed, "doors": {}}
    with tempfile.TemporaryDirectory(prefix="eve-fuzz-") as tmp:
        root = Path(tmp)
        for i, door in enumerate(args.doors.split(",")):
            n = max(1, round(EXAMPLES[door] * args.scale))
            print(f"{door}: {n} inputs", flush=True)
            report["doors"][door] = explore(door, n, root, sampler, args.seed + i)
            print(
                f"  {json.dumps({k: v for k, v in report['doors'][door].items() if not isinstance(v, (dict, list))})}"
            )
        if not args.no_extras:
            print("100,000 rows", flush=True)
            report["doors"]["csv-100k"] = hundred_thousand_rows(root, sampler)
            print("uploaded models, checked in a child process", flush=True)
            report["doors"]["uploaded-model"] = uploaded_models(root, sampler, repeat=max(1, round(2 * args.scale)))
            report["screen_cost"] = screen_cost(root)
            print(f"  {report['screen_cost']}", flush=True)
            print("the app's uploaders", flush=True)
            report["doors"]["app"] = app_door(sampler)
            print("survival", flush=True)
            report["survival"] = survival()
    wait_for_model_checks()  # checks past their limit run on: the interpreter must not exit under them
    doors = report["doors"]
    report["total"] = {
        "inputs": sum(d["inputs"] for d in doors.values()),
        "accepted": sum(d["accepted"] for d in doors.values()),
        "refused": sum(d["refused"] for d in doors.values()),
        "crashed": sum(d["crashed"] for d in doors.values()),
        "wrong": sum(d["wrong"] for d in doors.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(maxrss_mb(), 1),
        "largest_rss_growth_of_one_input_mb": max(d["largest_rss_growth_mb"] for d in doors.values()),
    }
    print(json.dumps(report["total"], indent=1))
    out = Path(args.out) if args.out else (OUT if args.scale == 1 and args.doors == ",".join(EXAMPLES) else None)
    if out is not None:
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
