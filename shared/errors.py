"""Failures the core reports to its callers, whatever the entry point (HTTP, CLI, queue)."""


class NotFound(Exception):
    """The thing does not exist for this account (another account's looks the same)."""


class Conflict(Exception):
    """The thing exists already (or runs already); `extensions` are members the problem
    answer adds (RFC 9457), e.g. the id of what conflicts."""

    def __init__(self, message: str = "", **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class OverBudget(Exception):
    """A budget of the account is spent for now: try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidField(ValueError):
    """Input that passed the model but fails against stored state, naming the property."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConsentNotGranted(InvalidField):
    """Entra ID came back without an administrator's consent (refused, or no tenant named)."""


class Unavailable(Exception):
    """The app cannot serve: its settings are incomplete or its storage does not answer."""


class VerificationFailed(Exception):
    """A connection's verification message could not be delivered: `names` is the property
    to blame (the connection string, the queue...), `reason` what the service said."""

    def __init__(self, names: str, reason: str) -> None:
        super().__init__(
            f"the verification message could not be delivered: {reason} "
            "(send ?verify=false to save without the check)"
        )
        self.names, self.reason = names, reason


class Invalid(ValueError):
    """Input that fails a product rule: `errors` maps each property to blame to its reasons."""

    def __init__(self, detail: str, errors: dict[str, list[str]]) -> None:
        super().__init__(detail)
        self.errors = errors


class LimitReached(Exception):
    """The account holds as many of a thing as it may."""


class Forbidden(Exception):
    """The caller's key may not do this (beyond its scopes, which the route machinery
    checks): e.g. a key restricted to connections naming another; `field` names the property
    that names it, if one does."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# The errors that refuse a request before anything changed (each a 4xx at the HTTP edge; only
# Unavailable is not one): the audit log records such a change as refused. Kept equal to the
# problem table's 4xx rows by tests/test_problems.py.
REFUSALS: tuple[type[Exception], ...] = (
    NotFound, Conflict, OverBudget, LimitReached, Invalid, InvalidField, VerificationFailed,
    Forbidden,
)  # fmt: skip
