"""Eve on a Ray cluster: the same scores, with the heavy part fanned out as Ray tasks.

What fans out is what costs: the model's outputs over a cohort (one task per shard of rows) and,
on the diffusion path, one task per (feature, output, value), each drawing that value's N samples. The
estimator runs on the driver through the same functions as a local run (`scoring.data_report`,
`scoring.diffusion_scores`), so a cluster run's report is the local run's:

* shards start where the local run's batches do (a whole number of batches each), so every image
  goes through the model in the same batch as locally;
* a diffusion score's seeds come from its sample's index (`diffusion.score.sample_seed`), never
  from the worker that drew it.

Joining a cluster by address ships Eve to it as Ray's `working_dir` (`runtime_env`): its code and
committed assets (the zoo's weights, the diffusion models), so a node without Eve installed runs
its tasks. Data and a user's model file are not shipped: every node reads them from a shared file
system, or the data from an object store (`s3://...`, `engine.data.remote`).

Ray retries a task whose worker died (`max_retries`); a task that raises (a path the worker cannot
read, say) is not retried and stops the run with the worker's message before anything is written.

    cluster = Cluster.connect()                      # a local Ray on 127.0.0.1, or connect("host:6379")
    report = cluster.data_scores(ModelRef.builtin("synthbrain-diagnosis"), "synthbrain")
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.cards import ModelRef
from engine.data import Dataset
from engine.data.defaults import open_dataset
from engine.errors import EveInputError, reason
from engine.options import SCORE
from engine.paths import REPO_ROOT

SHARD_BATCHES = 4  # most batches a data-path task takes: shards are whole batches, so they start where local ones do
TASK_RETRIES = 3  # times Ray reruns a task whose worker process died
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local cluster listens on 127.0.0.1 only
CONNECT_TIMEOUT_S = 5.0  # Ray itself waits minutes on an address nobody answers
# what a worker elsewhere does not need of the repository: data, environments, tests, benchmarks, caches
# (gitignore patterns: a leading / anchors at the repository, so engine/data stays)
SHIPPED_EXCLUDES = [
    *("/.git", "/.venv", "/data", "/tests", "/test-artifacts", "/benchmarks", "/.hypothesis", "/node_modules"),
    *("__pycache__", ".eve_cache", "eve-generators"),
]
LOOPBACK = ("127.0.0.1", "localhost")


def runtime_env() -> dict:
    """Ray's runtime environment for a cluster joined by address: Eve's code and committed assets as
    the workers' `working_dir` (uploaded once, cached by the cluster by content)."""
    return {"working_dir": str(REPO_ROOT), "excludes": SHIPPED_EXCLUDES}


def shard_batches(n_rows: int, batch_size: int, workers: int) -> int:
    """Batches per data-path task: at most `SHARD_BATCHES`, and few enough that every worker gets two
    shards (a small cohort still spreads; a slow shard does not hold up the rest)."""
    return int(np.clip(np.ceil(n_rows / (batch_size * 2 * max(workers, 1))), 1, SHARD_BATCHES))


def _remote(function, **options):
    import ray

    return ray.remote(max_retries=TASK_RETRIES, **options)(function)


# a worker process runs many tasks: it loads each model once
@functools.lru_cache(maxsize=4)
def _worker_model(ref: ModelRef, device: str):
    from engine.models import load

    return load(ref, device)


def _outputs_task(ref: ModelRef, dataset: Dataset, rows: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """A worker's shard: the model's outputs on `rows` of the dataset (the driver's, checked there; its
    files read on the worker, from the shared folder or the object store), in row order."""
    from engine.scores.service import model_outputs

    model, card = _worker_model(ref, device)
    return model_outputs(model, dataset, card.spec, rows, batch_size=batch_size, shard=True)


def _value_task(ref: ModelRef, generator_source: str, plan, k: int, batch_size: int, device: str, threads: int):
    """A worker's feature value: `diffusion.score.draw_value` for value k of a score's plan, with the
    driver's torch threads (the sampler's float sums then run in the same order: the driver's numbers)."""
    from engine.diffusion import load_diffusion  # cached per path: a worker loads each generator once
    from engine.scores.generator import draw_value

    torch.set_num_threads(threads)
    model, _ = _worker_model(ref, device)
    return draw_value(model, load_diffusion(generator_source), plan, k, batch_size=batch_size)


def _score_task(ref: ModelRef, card, generator_source: str, feature: str, output: int, settings: dict):
    """A worker's whole diffusion score for one (feature, output): `diffusion.score.diffusion_score`'s result,
    with the driver's torch threads."""
    from engine.diffusion import load_diffusion
    from engine.scores.generator import diffusion_score

    torch.set_num_threads(settings.pop("threads"))
    model, _ = _worker_model(ref, settings.pop("device"))
    return diffusion_score(model, card, load_diffusion(generator_source), feature, output=output, **settings)


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0]


def _check_reachable(address: str) -> None:
    """Fail fast, naming the fix, when nothing listens at host:port (`auto` and `ray://` are Ray's to resolve)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EveInputError(f"Ray address {address!r} is not host:port: give it like 127.0.0.1:6379, or 'auto'.")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise EveInputError(
            f"No Ray cluster answers at {address} ({reason(exc)}): start one there with `ray start --head "
            f"--port {port}`, or check the address (or leave it out to start a local one)."
        ) from exc


def _worker_failure(exc: BaseException, what: str) -> EveInputError:
    """The message for a failed task: the worker's own EveInputError where it raised one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EveInputError):
        return EveInputError(
            f"A Ray worker could not compute {what}: {cause} Every worker must read the same model file and "
            "data path as the driver: put them on a file system all nodes share."
        )
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(cause, MemoryError):  # Ray's OOM killer, or torch's
        return EveInputError(
            f"A Ray worker ran out of memory computing {what}: give a smaller --batch-size, or run on nodes "
            "with more memory."
        )
    return EveInputError(
        f"A Ray task computing {what} failed ({reason(exc, typed=True)}): check the workers' logs "
        "(ray logs, or /tmp/ray/session_latest/logs), then rerun; nothing was written."
    )


@dataclass
class Cluster:
    """A connection to Ray: `connect` once, score with `data_scores` / `diffusion_scores`, then `shutdown`."""

    address: str | None  # None: the local cluster this process started
    started_here: bool

    @classmethod
    def connect(cls, address: str | None = None, *, num_cpus: int | None = None) -> Cluster:
        """Join the cluster at `address` (host:port, `ray://host:port` or `auto`), or start a local
        one bound to 127.0.0.1 with `num_cpus` workers (default: every core)."""
        if address:
            _check_reachable(address)
        if (not address or _host(address) in LOOPBACK) and "ray" not in sys.modules:
            # Ray's own switch for a one-machine cluster: every server on the loopback address, not the
            # node's network address (read when ray is imported, so set before)
            os.environ.setdefault(LOCAL_ONLY_ENV, "0")
        import ray

        if ray.is_initialized():  # this process is already on a cluster (a test's, a notebook's): use it
            return cls(address, started_here=False)
        if address:
            try:
                ray.init(address=address, log_to_driver=False, runtime_env=runtime_env())
            except ConnectionError as exc:
                raise EveInputError(
                    f"The Ray cluster at {address} refused this driver ({reason(exc)}): if it uses token "
                    "authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on its head "
                    "node, then rerun."
                ) from exc
            return cls(address, started_here=True)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return cls(None, started_here=True)

    def shutdown(self) -> None:
        """Leave the cluster (and stop it where this process started it)."""
        import ray

        if self.started_here:
            ray.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def workers(self) -> int:
        import ray

        return int(ray.cluster_resources().get("CPU", 1))

    def _gather(self, futures: list, what: str, progress=None) -> list:
        """Results in submission order, `progress(done, total)` as tasks finish; a failure raises at once."""
        import ray

        results, pending = {}, list(futures)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                results[finished[0]] = ray.get(finished[0])  # a failed task raises now, not after the rest
                if progress:
                    progress(len(results), len(futures))
            return [results[future] for future in futures]
        except ray.exceptions.RayError as exc:
            for future in pending:
                ray.cancel(future)
            raise _worker_failure(exc, what) from exc

    # -- the data path ------------------------------------------------------------------------

    def model_outputs(
        self,
        ref: ModelRef,
        dataset: Dataset | str,
        rows: Sequence[int],
        *,
        batch_size: int = SCORE.batch_size,
        device: str = "cpu",
        progress=None,
    ) -> np.ndarray:
        """`scoring.model_outputs` over `rows` of a dataset (or the one `open_dataset` opens from a
        name, folder or object-store URI), one task per shard of whole batches (`shard_batches`);
        (N, K) float32 in row order, each image in the batch it has locally."""
        import ray

        dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        ref = _absolute(ref)
        if dataset.remote is None and not dataset.root.is_absolute():  # as for the model file
            dataset = replace(dataset, root=dataset.root.resolve())
        rows = np.asarray(rows, dtype=np.int64)
        shard = batch_size * shard_batches(len(rows), batch_size, self.workers)
        task = _remote(_outputs_task, num_cpus=1)
        shared = ray.put(dataset)  # once into the object store, not once per task
        futures = [
            task.remote(ref, shared, rows[start : start + shard], batch_size, device)
            for start in range(0, len(rows), shard)
        ]
        if not futures:
            raise EveInputError("No images to score: the chosen split is empty; choose another split, or score 'all'.")
        parts = self._gather(futures, f"{ref}'s outputs", progress)
        return np.concatenate(parts)

    def outputs_runner(self, ref: ModelRef, device: str = "cpu"):
        """An `outputs` runner for `engine.scores.service.model_outputs` (and so `data_scores`): the outputs of
        `ref` computed here, shard by shard (`model_outputs`); the service keeps every check and the estimator."""

        def run(dataset: Dataset, spec, rows, batch_size: int, progress=None) -> np.ndarray:
            return self.model_outputs(ref, dataset, rows, batch_size=batch_size, device=device, progress=progress)

        return run

    # -- the diffusion path -------------------------------------------------------------------

    def diffusion_runner(self, ref: ModelRef, generator_source: str, device: str = "cpu", progress=None):
        """A `runner` for `scoring.diffusion_scores`: every (feature, output, value) is one Ray task that
        draws that value's N samples (`diffusion.score.draw_value`, the model and the generator loaded
        once per worker, by name or card path); the driver plans each score and finishes it from its
        values' draws. A linear-Gaussian generator's bootstrap refits (`generator_bootstrap_score`) run
        as one task per score instead: each replicate is refitted from the last."""
        from engine.scores.generator import finish_score, plan_score, refittable

        ref = _absolute(ref)
        source = str(Path(generator_source).resolve()) if Path(generator_source).is_file() else str(generator_source)

        def run(todo: list[tuple[str, int]], card, generator, settings: dict) -> list:
            settings = dict(settings)
            n_boot, batch_size = settings.pop("n_boot"), settings.pop("batch_size")
            what = f"diffusion scores of {ref}"
            if refittable(generator) is not None and n_boot > 0:
                task = _remote(_score_task, num_cpus=1)
                every = {**settings, "n_boot": n_boot, "batch_size": batch_size, "device": device}
                every["threads"] = torch.get_num_threads()
                return self._gather(
                    [task.remote(ref, card, source, f, j, dict(every)) for f, j in todo], what, progress
                )
            plans = [plan_score(card, generator, f, output=j, **settings) for f, j in todo]
            task = _remote(_value_task, num_cpus=1)
            futures = [
                task.remote(ref, source, plan, k, batch_size, device, torch.get_num_threads())
                for plan in plans
                for k in range(len(plan.values))
            ]
            draws = iter(self._gather(futures, what, progress))
            return [finish_score(generator, plan, [next(draws) for _ in plan.values], n_boot=n_boot) for plan in plans]

        return run

    def describe(self) -> str:
        """The cluster, for reports: where it is and how many CPUs it offers."""
        where = self.address or "a local Ray cluster on 127.0.0.1"
        return f"Ray {_ray_version()} at {where}, {self.workers} CPUs"


def _absolute(ref: ModelRef) -> ModelRef:
    """The model file's path made absolute: a worker's working directory is not the driver's."""
    if ref.is_torchscript and not Path(ref.path).is_absolute():
        return replace(ref, path=str(Path(ref.path).resolve()))
    return ref


def _ray_version() -> str:
    import ray

    return ray.__version__
