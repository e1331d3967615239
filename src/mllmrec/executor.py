"""Where a generating stage's batches run: in this process (local) or sharded over a Ray cluster (ray).

    from mllmrec import executor, partcache
    with executor.open_executor(params.executor, make_engine) as ex:       # ExecutorParams; make_engine builds one
        done = partcache.run_batches(todo, compute, cache_dir, SCHEMA, batch_size, ex)

    ray start --head                                                        # a cluster (docs/scaling.md)
    dvc exp run -S executor.kind=ray -S executor.address=auto               # textualize/draft/refine on it

`compute(engine, jobs) -> partcache.BatchOut` must be picklable (a module-level function, or a functools.partial
of one): under Ray it runs inside an actor that holds its own engine, built there by `make_engine` (the stages pass
`lambda: build_engine(spec)`, which cloudpickle ships with its EngineSpec). Results come back to the driver, which
alone writes the cache parts (partcache.run_batches), so a Ray run writes the same part files as a local run, a
killed cluster job resumes from them, and both share one cache. A worker that dies mid-batch costs that batch only:
it is resent to another actor (up to `max_retries` times per batch) and counted in the stage report.
"""

import socket
from collections import deque
from collections.abc import Callable, Iterator

from mllmrec.config import ExecutorParams
from mllmrec.errors import UserError

CONNECT_TIMEOUT_S = 5.0  # a TCP probe before ray.init: an unreachable head fails in seconds, not after Ray's retries
SCHEDULE_TIMEOUT_S = 120.0  # actors not placed by then: the cluster is busy or lacks a resource ray cannot see


class _Worker:
    """One engine, built on its first batch: a local run's only worker, or one Ray actor (an engine that fails to
    build raises, not dies)."""

    def __init__(self, make_engine: Callable):
        self.make_engine, self.engine = make_engine, None

    def ready(self) -> bool:
        return True

    def run(self, compute: Callable, jobs: list):
        if self.engine is None:
            self.engine = self.make_engine()
        return compute(self.engine, jobs)


class LocalExecutor:
    """Batches in order, in this process, on one worker (a fully cached run builds no engine)."""

    def __init__(self, make_engine: Callable):
        self.worker = _Worker(make_engine)
        self.stats: dict = {}  # nothing to report: a local run's report stays what it always was

    def map(self, compute: Callable, batches: list[list]) -> Iterator[tuple[int, object]]:
        for i, jobs in enumerate(batches):
            yield i, self.worker.run(compute, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def report_entry(ex) -> dict:
    """The stage report's `executor` entry: Ray runs only (workers, batches resent after a worker died)."""
    return {"executor": ex.stats} if ex.stats else {}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "executor.kind = ray needs Ray: pip install -e .[ray] (or pip install 'ray>=2.9'), "
            "or set executor.kind = local"
        ) from None
    return ray


def _probe(address: str) -> None:
    """Fail fast on an address nothing listens on (ray.init would retry for a long while)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:
        raise UserError(
            f"executor.address = {address!r}: no Ray cluster reachable there ({e}). Start one with "
            "`ray start --head` on the head node (it prints the address; workers join with "
            "`ray start --address=HEAD_IP:6379`), or use executor.address = auto on a cluster node, "
            "or null for a local one"
        ) from None


class RayExecutor:
    """Batches over `num_workers` Ray actors, results yielded as they finish; started at the first batch."""

    def __init__(self, params: ExecutorParams, make_engine: Callable):
        self.params, self.make_engine = params, make_engine
        self.ray, self.actors, self.started_ray = None, [], False
        self.stats = {"kind": "ray", "workers": 0, "batch_retries": 0}

    def _start(self) -> None:
        ray, p = _import_ray(), self.params
        if p.address not in (None, "auto"):
            _probe(p.address)
        if not ray.is_initialized():  # else: a caller (a test, a notebook) already connected
            try:
                if p.address is None:  # a throwaway cluster on this machine
                    ray.init(include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=p.address, log_to_driver=False)
            except (ConnectionError, RuntimeError) as e:
                raise UserError(
                    f"executor.address = {p.address!r}: cannot connect to a Ray cluster ({e}); start "
                    "one with `ray start --head`, or set executor.address = null for a local one"
                ) from None
            self.started_ray = True
        self.ray = ray
        have = ray.cluster_resources()
        need = {"CPU": p.num_workers * p.num_cpus_per_worker, "GPU": p.num_workers * p.num_gpus_per_worker}
        short = {r: (n, have.get(r, 0)) for r, n in need.items() if n > have.get(r, 0)}
        if short:  # Ray would queue the actors forever
            raise UserError(
                "the Ray cluster lacks the resources executor asks for: "
                + ", ".join(
                    f"{r} {n:g} needed (num_workers × num_{r.lower()}s_per_worker), {h:g} in the cluster"
                    for r, (n, h) in short.items()
                )
                + "; lower executor.num_workers / num_*_per_worker or add nodes "
                "(`ray start --address=HEAD_IP:6379` on each)"
            )
        self.actors = self._new_actors(p.num_workers)
        self.stats["workers"] = p.num_workers

    def _new_actors(self, n: int) -> list:
        """n actors, placed (not queued) within SCHEDULE_TIMEOUT_S."""
        p, ray = self.params, self.ray
        cls = ray.remote(num_cpus=p.num_cpus_per_worker, num_gpus=p.num_gpus_per_worker)(_Worker)
        actors = [cls.remote(self.make_engine) for _ in range(n)]
        try:
            ray.get([a.ready.remote() for a in actors], timeout=SCHEDULE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise UserError(
                f"Ray placed only some of {n} executor actor(s) within {SCHEDULE_TIMEOUT_S:.0f} s "
                "(cluster busy, or a node gone?); see `ray status`"
            ) from None
        return actors

    def map(self, compute: Callable, batches: list[list]) -> Iterator[tuple[int, object]]:
        if not batches:
            return
        if not self.actors:
            self._start()
        ray = self.ray
        pending, idle, inflight, tries = deque(range(len(batches))), list(self.actors), {}, {}
        while pending or inflight:
            while pending and idle:
                actor, i = idle.pop(), pending.popleft()
                inflight[actor.run.remote(compute, batches[i])] = (actor, i)
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, i = inflight.pop(ref)
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the process died (OOM, node lost, crash): redo this batch
                tries[i] = tries.get(i, 0) + 1
                self.stats["batch_retries"] += 1
                if tries[i] > self.params.max_retries:
                    raise UserError(
                        f"batch {i} ({len(batches[i])} jobs) lost its Ray worker {tries[i]} times "
                        f"(executor.max_retries = {self.params.max_retries}); last error: {e}"
                    ) from None
                ray.kill(actor)
                [replacement] = self._new_actors(1)
                self.actors[self.actors.index(actor)] = replacement
                idle.append(replacement)
                pending.appendleft(i)
                continue
            except ray.exceptions.RayTaskError as e:  # compute/engine raised: the same error a local run shows
                raise e.cause if isinstance(e.cause, UserError) else e from None
            idle.append(actor)
            yield i, out

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()


def open_executor(params: ExecutorParams | None, make_engine: Callable) -> LocalExecutor | RayExecutor:
    """The executor `params` asks for (None = local); use it as a context manager so Ray actors are released."""
    if params is None or params.kind == "local":
        return LocalExecutor(make_engine)
    _import_ray()  # fail before any work when the extra is missing
    return RayExecutor(params, make_engine)
