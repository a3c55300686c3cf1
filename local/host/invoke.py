"""Calling one user function the way the Python worker does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class InvocationContext:
    """What a function that takes `context` receives: the parts of func.Context we can give."""

    invocation_id: str
    function_name: str
    function_directory: str
    thread_local_storage: threading.local = field(default_factory=threading.local)
    trace_context: None = None
    retry_context: None = None


class FunctionInvoker:
    """Calls one user function: keyword = trigger binding name, plus `context` if it asks.

    Coroutine functions run on the loop; plain functions in the thread pool, as the Python
    worker does.
    """

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        argument_name: str,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.name = name
        self._function = function
        self._argument_name = argument_name
        self._executor = executor
        self._is_async = inspect.iscoroutinefunction(function)
        self._wants_context = "context" in inspect.signature(function).parameters
        self._directory = ""
        if self._wants_context:
            with contextlib.suppress(TypeError):
                self._directory = str(Path(inspect.getfile(function)).parent)

    async def __call__(self, argument: Any) -> Any:
        kwargs = {self._argument_name: argument}
        if self._wants_context:
            kwargs["context"] = InvocationContext(str(uuid.uuid4()), self.name, self._directory)
        if self._is_async:
            return await self._function(**kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor, functools.partial(self._function, **kwargs)
        )
        if inspect.isawaitable(result):  # a plain function wrapping a coroutine function
            result = await result
        return result
