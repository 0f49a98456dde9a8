"""Something another thread does while the test holds a transaction open."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


class Meanwhile:
    """Runs action on a thread of its own once go() is called; keeps what it returned or raised.

    The thread closes its database connection when done, as a request's would.
    """

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.result: Any = None
        self.error: Exception | None = None
        self.started, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def go(self) -> None:
        self.started.set()

    def join(self, seconds: float = 15) -> Any:
        """What the action returned; raises what it raised."""
        self.thread.join(seconds)
        if self.error is not None:
            raise self.error
        return self.result

    def _run(self) -> None:
        self.started.wait(10)
        try:
            self.result = self.action()
        except Exception as error:  # noqa: BLE001 - raised again on the test's thread by join()
            self.error = error
        finally:
            self.done.set()
            connection.close()
