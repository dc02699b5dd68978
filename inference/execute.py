# mypy: disable-error-code="no-untyped-call"
"""Running block jobs: in this process, on a local Dask cluster, or on a remote Dask scheduler.

Results are *streamed*: :func:`iter_owned_results` yields each :class:`OwnedResult` as soon as it is done
(``distributed.as_completed``) and keeps at most ``max_in_flight`` tasks submitted, so the client holds a
bounded number of blocks in memory whatever the scene size. Tasks carry only paths and rectangles; each
worker loads the checkpoint once (cached per process by :func:`cspon_rs.inference.predictors.get_predictor`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cspon_rs.errors import ConfigError
from cspon_rs.inference.blocks import (
    OwnedJob,
    OwnedResult,
    PairPixels,
    predict_owned,
    predict_owned_pixels,
    read_owned,
)

__all__ = ["LOCAL", "dask_client", "iter_owned_results", "start_local_cluster"]

#: ``scheduler`` value that starts a local cluster even with one worker (used by the benchmark).
LOCAL = "local"


def start_local_cluster(workers: int) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes, set up for PyTorch.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it switches off glibc's dynamic mmap
    threshold, so every large tensor PyTorch allocates becomes a fresh ``mmap`` with page faults, which
    made the model about 2x slower in a worker than in a plain process (measured: 2.1 s vs 1.1 s per batch
    of 8 windows). The local cluster starts its workers without it; set the same for workers you start
    yourself (``dask worker``).
    """
    import dask
    from distributed import LocalCluster

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    # The nanny copies its pre-spawn variables into *this* process's environment before spawning (so an
    # earlier cluster may have left MALLOC_TRIM_THRESHOLD_ here); spawn without it and give the caller
    # its environment back afterwards.
    caller_environ = dict(os.environ)
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
    finally:
        os.environ.clear()
        os.environ.update(caller_environ)


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (``tcp://host:port``) or to a new ``LocalCluster``.

    The local cluster has ``workers`` single-threaded worker *processes* (the GIL and PyTorch's own
    threads make processes the right unit); it is shut down on exit. A remote cluster is left running.
    """
    from distributed import Client

    if scheduler and scheduler != LOCAL:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ConfigError(f"cannot reach Dask scheduler {scheduler!r}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    cluster = start_local_cluster(workers)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def iter_owned_results(
    jobs: Sequence[OwnedJob],
    *,
    client: Any | None = None,
    max_in_flight: int | None = None,
) -> Iterator[OwnedResult]:
    """Yield the result of every :class:`OwnedJob`: in this process (block order) or on Dask (completion order).

    In this process the next block is read by a background thread while the model runs on the current one
    (GDAL releases the GIL), so reading and warping are hidden behind the model. On Dask each task reads
    and predicts its block (a worker's threads overlap the two across tasks).

    Raises:
        Exception: The first task error, re-raised with its original type.
    """
    if client is not None:
        yield from _iter_dask(predict_owned, jobs, client, max_in_flight)
        return
    if not jobs:
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cspon-read") as pool:
        ahead: Future[PairPixels] = pool.submit(read_owned, jobs[0])
        for k, job in enumerate(jobs):
            pixels = ahead.result()
            if k + 1 < len(jobs):
                ahead = pool.submit(read_owned, jobs[k + 1])
            try:
                yield predict_owned_pixels(job, pixels)
            except BaseException:
                ahead.cancel()
                raise


def _iter_dask(func: Any, jobs: Sequence[Any], client: Any, max_in_flight: int | None) -> Iterator[Any]:
    """Submit ``func(job)`` for every job, at most ``max_in_flight`` at a time; yield results as they finish."""
    from distributed import as_completed

    if max_in_flight is None:
        n_threads = sum(client.nthreads().values()) or 1
        max_in_flight = 2 * n_threads + 1
    pending = list(reversed(jobs))
    token = uuid.uuid4().hex[:12]

    def submit(job: Any) -> Any:
        return client.submit(func, job, key=f"cspon-block-{token}-{job.index}", pure=False)

    first = [submit(pending.pop()) for _ in range(min(max_in_flight, len(pending)))]
    queue = as_completed(first)
    try:
        for future in queue:
            result = future.result()
            future.release()
            if pending:
                queue.add(submit(pending.pop()))
            yield result
    finally:
        for future in list(queue.futures):
            future.cancel()
