"""The engine thread: one thread owns the model and the scheduler; HTTP handlers talk to it through queues.

Handlers put commands (add, abort, run-a-function) on a thread-safe queue; the thread applies them between
scheduler steps and pushes each changed ``RequestOutput`` to the asyncio queue of its request. While the
scheduler has nothing to run the thread waits on the command queue, and the simulated clock advances by
the wall time it waited (an idle device); while it has work the clock advances by simulated step time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from typing import AsyncIterator, Callable

from optimum_npu.serving.engine_core import EngineCore
from optimum_npu.serving.outputs import RequestOutput
from optimum_npu.serving.sampling_params import SamplingParams
from optimum_npu.serving.vision import VisionInputs

logger = logging.getLogger(__name__)


class EngineStoppedError(RuntimeError):
    """The engine is shutting down: the request was refused or cut short."""


class AsyncEngine:
    """Runs an ``EngineCore`` on its own thread.

    Args:
        core: the engine core (owned by the thread from ``start()`` on).
    """

    def __init__(self, core: EngineCore):
        self.core = core
        self.draining = False
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optimum-npu-engine", daemon=True)

    def start(self) -> "AsyncEngine":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                       prompt: str | None = None, vision: VisionInputs | None = None) -> AsyncIterator[RequestOutput]:
        """Queues a request and yields its output each time it changes, the last one finished. Leaving the
        iteration early (a disconnected client) aborts the request and frees its blocks."""
        if self.draining or not self.alive:
            raise EngineStoppedError("the server is shutting down and accepts no new request")
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        self._commands.put(("add", request_id, prompt_ids, params, prompt, vision))
        finished = False
        try:
            while not finished:
                item = await stream.get()
                if isinstance(item, Exception):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._commands.put(("abort", request_id))

    async def call(self, function: Callable[[EngineCore], object]):
        """Runs ``function(core)`` on the engine thread between steps; returns its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put(("call", function, future))
        return await asyncio.wrap_future(future)

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stops accepting requests, lets running ones finish for up to ``grace_s`` seconds, then fails the rest
        and stops the thread."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self._thread.is_alive() and self._streams and time.monotonic() < deadline:
            time.sleep(0.02)
        self._commands.put(("stop",))
        self._thread.join(timeout=max(5.0, grace_s))

    # ---- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        scheduler = self.core.scheduler
        try:
            while True:
                if not scheduler.has_work:
                    waited = time.monotonic()
                    command = self._commands.get()
                    scheduler.advance(time.monotonic() - waited)
                    if not self._apply(command):
                        break
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if not self._apply(command):
                        return
                if scheduler.has_work:
                    self._step()
        finally:
            self._stopped.set()
            for request_id in list(self.core.groups):
                self.core.abort(request_id)
                self._deliver(request_id, EngineStoppedError("the server shut down before the request finished"))

    def _apply(self, command: tuple) -> bool:
        kind = command[0]
        if kind == "stop":
            return False
        if kind == "add":
            _, request_id, prompt_ids, params, prompt, vision = command
            if request_id not in self._streams:       # the client left before the engine saw the request
                return True
            try:
                self.core.add(request_id, prompt_ids, params, prompt, vision)
            except ValueError as err:
                self._deliver(request_id, err)
        elif kind == "abort":
            self.core.abort(command[1])
        elif kind == "call":
            _, function, future = command
            try:
                future.set_result(function(self.core))
            except Exception as err:  # noqa: BLE001 - handed to the caller's await
                future.set_exception(err)
        return True

    def _step(self) -> None:
        try:
            outputs = self.core.step()
        except Exception as err:  # noqa: BLE001 - a failed step fails its requests, the server stays up
            logger.exception("scheduler step failed")
            for request_id in list(self.core.groups):
                self.core.abort(request_id)
                self._deliver(request_id, RuntimeError(f"the engine step failed: {err}"))
            return
        for output in outputs:
            self._deliver(output.request_id, output)

    def _deliver(self, request_id: str, item) -> None:
        target = self._streams.get(request_id)
        if target is None:
            return
        loop, stream = target
        try:
            loop.call_soon_threadsafe(stream.put_nowait, item)
        except RuntimeError:   # the handler's event loop is closed
            pass
