"""A :class:`~dedup.server.core.KafkaServer` on a background thread, for synchronous code
(tests, ``dedup.testing``, the demo)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .core import KafkaServer

__all__ = ["ServerThread"]


class ServerThread:
    """A :class:`KafkaServer` on its own thread and event loop, for synchronous code: a
    context manager; the control methods block until the server has done them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: KafkaServer = None  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._run, args=(args, kwargs), name="dedup-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._loop.close()
            raise self._error

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.server = KafkaServer(*args, **kwargs)
            self._loop.run_until_complete(self.server.start())
        except BaseException as error:  # reported to the constructor's caller
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the server's thread (its state is the loop's alone)."""

        async def call() -> Any:
            return function(*args)

        return self.call(call())

    @property
    def bootstrap_servers(self) -> str:
        return self.server.bootstrap_servers

    def stop_broker(self, broker_id: int, *, clean: bool = False) -> None:
        self.call(self.server.stop_broker(broker_id, clean=clean))

    def start_broker(self, broker_id: int) -> None:
        self.call(self.server.start_broker(broker_id))

    def stop_leader(self, topic: str, partition: int = 0) -> int:
        """Stop the broker leading ``topic``-``partition``; returns its id."""
        leader = self.run(self.server.leader, topic, partition)
        if leader is None:
            raise ValueError(f"{topic}-{partition} has no leader")
        self.stop_broker(leader)
        return leader

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self.server.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            # Connection handlers still waiting (a fetch in its wait, a read) end here.
            pending = asyncio.all_tasks(self._loop)

            async def cancelled() -> None:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

            self._loop.run_until_complete(cancelled())
            self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
