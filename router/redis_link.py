"""One process's link to the Redis of the shared state (router.state_redis).

:class:`RedisLink` owns the client (redis-py's asyncio client, imported only here
and only when the state is in Redis), the server-side scripts, and the decision
that Redis is *unavailable*:

- every script call made in one turn of the event loop goes to Redis in one
  pipeline (one connection, one write, one read): at high concurrency that is
  what keeps the CPU a call adds low;
- every operation runs under a timeout: ``timeout_ms``, or less when the
  caller's allowance is shorter (then running out raises :class:`Late`, which
  says nothing about Redis);
- a connection error, or a timeout while nothing has succeeded for a whole
  ``timeout_ms``, marks Redis unavailable (:attr:`RedisLink.down`, logged once);
  a timeout while other operations succeed is this process's own backlog and
  fails only that operation. :meth:`RedisLink.recovered` clears the mark.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from router.config import StateSettings
from router.errors import StateUnavailableError
from router.logger import get_logger
from router.redact import redact_foreign

__all__ = ["MAX_CONNECTIONS", "Down", "Late", "RedisLink"]

_log = get_logger("router.money")

# Connections to Redis per process; more operations at once wait for one (within
# their timeout). Each is busy for one round trip (of a whole pipeline).
MAX_CONNECTIONS = 64

# One queued script call: its name, keys, arguments and the future of its reply.
_Op = tuple[str, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class Late(Exception):
    """An operation outlived the caller's own allowance (shorter than timeout_ms)."""


class Down(Exception):
    """Redis did not answer this operation (recorded on the link)."""

    def __init__(self, error: StateUnavailableError) -> None:
        self.error = error


class RedisLink:
    """The client, the scripts, one pipeline per loop turn, and availability.

    Args:
        url: the Redis URL (it may carry a password: never shown).
        where: the URL as messages show it (no credentials).
        settings: ``settings.state`` (timeout_ms, on_unavailable for the log line).
        scripts: name -> Lua text of every script :meth:`run` may call.
        clock: the monotonic clock.
        on_down: called when Redis is marked unavailable (wakes the reconnection).
    """

    def __init__(
        self,
        url: SecretStr,
        where: str,
        settings: StateSettings,
        scripts: Mapping[str, str],
        clock: Callable[[], float],
        on_down: Callable[[], None],
    ) -> None:
        self._url = url
        self.where = where
        self.settings = settings
        self.timeout_s = settings.timeout_ms / 1000
        self._clock = clock
        self._on_down = on_down
        # name -> (sha1, text): called by EVALSHA, loaded again when Redis forgot them.
        self._scripts = {
            name: (hashlib.sha1(text.encode()).hexdigest(), text)  # noqa: S324
            for name, text in scripts.items()
        }
        self._client: Any = None
        # Script calls queued this turn of the loop (one pipeline), and pipelines in flight.
        self._batch: list[_Op] = []
        self._io: set[asyncio.Task[None]] = set()
        # Why Redis is unavailable; None while it answers.
        self.down: StateUnavailableError | None = None
        self.failures = 0  # operations Redis did not answer, since start
        self._last_ok = float("-inf")  # when an operation last succeeded

    def connect(self) -> None:
        """Create the client (no round trip yet).

        Raises:
            StateUnavailableError: the ``redis`` package (the ``[redis]`` extra) is
                not installed.
        """
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise StateUnavailableError(
                "settings.state.backend is redis but the redis package is not installed:"
                " install the extra, pip install 'yaml-llm-router[redis]'"
            ) from None
        timeout = max(self.timeout_s, 0.05)
        pool = BlockingConnectionPool.from_url(
            self._url.get_secret_value(),
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,  # waiting for a free connection
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # a failure is reported, not retried blindly
        )
        self._client = Redis.from_pool(pool)  # owns the pool: aclose() closes it

    async def warm(self) -> None:
        """Load every script now (not on a call's first use)."""
        await self.guard(self._load_scripts(), self.timeout_s)

    async def _load_scripts(self) -> None:
        for _, text in self._scripts.values():
            await self._client.script_load(text)

    async def aclose(self) -> None:
        """Stop the pipelines in flight and close the connections."""
        for task in list(self._io):
            task.cancel()
        if self._io:
            await asyncio.gather(*self._io, return_exceptions=True)
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:  # closing a dead connection: nothing left to do
                _log.debug("state_close_failed", redis=self.where, error=type(exc).__name__)

    # -- operations ------------------------------------------------------------------

    async def run(
        self, script: str, keys: Sequence[str], args: Sequence[Any], timeout_s: float
    ) -> Any:
        """One script call under ``timeout_s`` (pipelined with the others of this turn).

        Raises:
            Down: Redis did not answer (recorded).
            Late: ``timeout_s`` (shorter than timeout_ms) ran out first.
        """
        return await self.guard(self._submit(script, keys, args), timeout_s)

    async def eval_once(
        self, text: str, keys: Sequence[str], args: Sequence[Any], timeout_s: float
    ) -> Any:
        """A script run rarely (an import): EVAL, not pipelined."""
        if self._client is None:
            self.connect()
        return await self.guard(self._client.eval(text, len(keys), *keys, *args), timeout_s)

    def _submit(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._batch.append((script, keys, args, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return fut

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._pipeline(batch))
        self._io.add(task)
        task.add_done_callback(self._io.discard)

    async def _pipeline(self, batch: list[_Op]) -> None:
        from redis.exceptions import NoScriptError, RedisError

        ops = [op for op in batch if not op[3].done()]  # a caller that gave up is not sent
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await self._execute(ops)
                if any(isinstance(r, NoScriptError) for r in results):
                    await self._load_scripts()  # Redis restarted (or failed over)
                    again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                    retried = await self._execute([ops[i] for i in again])
                    for i, r in zip(again, retried, strict=True):
                        results[i] = r
        except (RedisError, OSError, TimeoutError) as exc:
            for op in ops:
                if not op[3].done():
                    op[3].set_exception(exc)
            return
        for op, result in zip(ops, results, strict=True):
            if not op[3].done():
                if isinstance(result, BaseException):
                    op[3].set_exception(result)
                else:
                    op[3].set_result(result)

    async def _execute(self, ops: list[_Op]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in ops:
            pipe.evalsha(self._scripts[script][0], len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def guard(self, op: Awaitable[Any], timeout_s: float) -> Any:
        """Await ``op`` under ``timeout_s``; a failure becomes Down (or Late)."""
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                result = await op
        except TimeoutError:
            if timeout_s < self.timeout_s:
                raise Late from None  # the caller's allowance ran out, not Redis's time
            raise Down(self.failed(TimeoutError())) from None
        except (RedisError, OSError) as exc:
            raise Down(self.failed(exc)) from None
        self._last_ok = self._clock()
        return result

    # -- availability ----------------------------------------------------------------

    def failed(self, exc: BaseException) -> StateUnavailableError:
        """The error of an operation Redis did not answer; marks Redis unavailable when
        it is (see the module docstring)."""
        self.failures += 1
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.settings.timeout_ms} ms"
        else:
            why = redact_foreign(str(exc) or type(exc).__name__, [self._url.get_secret_value()])
        error = StateUnavailableError(
            f"shared state at {self.where} is unavailable: {type(exc).__name__}: {why}"
        )
        if self.down is not None:
            return self.down
        if isinstance(exc, TimeoutError) and self._clock() - self._last_ok < self.timeout_s:
            return error
        self.down = error
        closed = self.settings.on_unavailable == "closed"
        _log.error(
            "state_unavailable",
            redis=self.where,
            error=str(error),
            on_unavailable=self.settings.on_unavailable,
            degraded="paid steps refused, free steps on this process's limits"
            if closed
            else "every step on this process's limits and budget account",
        )
        self._on_down()
        return error

    def recovered(self) -> bool:
        """Redis answered: clear the unavailable mark. True when it was set."""
        if self.down is None:
            return False
        self.down = None
        return True
