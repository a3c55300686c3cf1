"""Failures the core reports to its callers, whatever the entry point (HTTP, CLI, queue)."""


class NotFound(Exception):
    """The thing does not exist for this account (another account's looks the same)."""


class Conflict(Exception):
    """The thing exists already."""


class InvalidField(ValueError):
    """Input that passed the model but fails against stored state, naming the property."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
