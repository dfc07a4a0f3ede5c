"""Worker threads that run one callable after another (runners, log readers and writers), so that
starting one is not starting a thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

WORKER_IDLE_S = 60.0  # a worker thread with nothing to run for this long ends


class Job:
    """What submit() started: wait for it to end, as for a thread."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


class Workers:
    """Daemon threads that each run one callable at a time, then wait for the next.

    Work starts on an idle worker without a new thread: Thread.start() waits until the new
    thread has run, and with a few dozen threads busy that wait was a third of what dispatching an
    execution cost the reconcile pass. A thread is started only when none is idle; one idle for
    WORKER_IDLE_S ends, so the threads follow the busiest recent hour, not the busiest ever."""

    def __init__(self, idle_s: float = WORKER_IDLE_S) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], object], str, Job]] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for work, less the work queued for them
        self._lock = threading.Lock()
        self._idle_s = idle_s

    def submit(self, fn: Callable[[], object], name: str) -> Job:
        """Run fn on a worker (a new one if none is idle); `name` names the thread while it runs."""
        job = Job()
        with self._lock:
            if self._idle > 0:  # promised and queued at once: no idle worker ends between the two
                self._idle -= 1
                self._work.put((fn, name, job))
                return job
        threading.Thread(target=self._loop, args=(fn, name, job), name=name, daemon=True).start()
        return job

    def _loop(self, fn: Callable[[], object], name: str, job: Job) -> None:
        me = threading.current_thread()
        while True:
            me.name = name
            try:
                fn()
            except Exception:  # a runner reports its own failures; the worker goes on
                log.exception("%s: a worker's task failed", name)
            finally:
                job._done.set()
            me.name = "worker-idle"
            with self._lock:
                self._idle += 1
            while True:
                try:
                    fn, name, job = self._work.get(timeout=self._idle_s)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0 and self._work.empty():  # nothing queued for an idle worker: end
                            self._idle -= 1
                            return


# The log readers and writers of every execution this process follows.
LOG_WORKERS = Workers()
