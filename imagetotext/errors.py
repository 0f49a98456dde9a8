"""The one exception for "this request cannot be served".

Every refusal (a bad field, an image we will not read, a model nobody offers) is a
Refusal; each API turns it into its own error shape in one place
(`imagetotext.api.wire.refusal_response`, `imagetotext.api.ollama_compat.ollama_error`),
and the page shows its message.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request we refuse: the message, the HTTP status, AI Server's error code and the field at fault."""

    def __init__(self, message: str, status: int = 400, code: str = "ArgumentException", field: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.field = message, status, code, field


class ImageRejected(Refusal):
    """An upload that is not an image we accept (format, size, pixels, corruption)."""

    def __init__(self, message: str, status: int = 400, code: str = "InvalidImage") -> None:
        super().__init__(message, status, code, field="Image")
