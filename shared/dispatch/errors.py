"""Why a delivery failed, decided by the exception's type, and secrets kept out of the reason.

The SDKs' exceptions map to a category explicitly (one table below). Anything not in the table
is ours, not the customer's: it is logged with its traceback, counted, recorded as Transient
with Type `InternalError`, and retried.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

from shared.connstrings import ConnectionStringError
from shared.dispatch.isolation import IsolationFailure
from shared.endpoints import EndpointRefused, public_message
from shared.models.records import DeliveryError, ErrorCategory

log = logging.getLogger("shared.dispatch")

INTERNAL_ERROR = "InternalError"
INTERNAL_MESSAGE = "an internal error of the delivery service (logged); the delivery is retried"
# Blob calls answered with these need the customer to fix the container's connection.
_CONFIGURATION_STATUS = frozenset({401, 403, 404})
_SECRET_PATTERNS = re.compile(
    r"(sig=|SharedAccessKey=|AccountKey=|SharedAccessSignature=)[^;&\s\"']+", re.IGNORECASE
)


class TooLarge(Exception):
    """The message does not fit what the queue's link allows."""


class SessionRequired(Exception):
    """The queue is session-enabled and the message had no SessionId (Service Bus refuses
    it with amqp:not-allowed, which the SDK raises as a plain ServiceBusError)."""


SESSION_REQUIRED = (
    "the queue requires sessions: set SessionIdSource on the connection "
    "(Subject, EventKey or AccountId)"
)


def _refined(error: BaseException) -> BaseException:
    """A plain ServiceBusError that says the queue requires sessions becomes SessionRequired;
    a refused token reported as a connection error becomes the authentication error it is
    (the SDK does that whenever a client connects to a given address, as ours do: see
    ConnectGuard)."""
    from azure.servicebus._pyamqp.error import (
        AMQPException,
        AuthenticationException,
        ErrorCondition,
    )
    from azure.servicebus.exceptions import (
        ServiceBusAuthenticationError,
        ServiceBusConnectionError,
        ServiceBusError,
    )

    inner = getattr(error, "inner_exception", None)
    # On a send link Service Bus answers amqp:not-allowed only for a session-enabled queue
    # and no SessionId; azure-servicebus 7.15 raises it as a plain ServiceBusError wrapping
    # the AMQP error (tests/test_delivery_options.py sends one through the emulator).
    not_allowed = isinstance(inner, AMQPException) and inner.condition == ErrorCondition.NotAllowed
    if type(error) is ServiceBusError and not_allowed:
        return SessionRequired(SESSION_REQUIRED)
    if isinstance(error, ServiceBusConnectionError) and isinstance(inner, AuthenticationException):
        return ServiceBusAuthenticationError(message=str(error), error=inner)
    return error


class InternalErrors:
    """How many deliveries failed on our own bugs in this process (an operator's number: it
    is in every log line that reports one, and tests read it)."""

    def __init__(self) -> None:
        self.count = 0

    def report(self, error: BaseException) -> None:
        self.count += 1
        log.error(
            "internal error in a delivery (%d in this process): %s",
            self.count,
            type(error).__name__,
            exc_info=error,
            extra={"InternalErrors": self.count},
        )


internal_errors = InternalErrors()


@functools.cache
def _table() -> tuple[tuple[tuple[type[BaseException], ...], ErrorCategory], ...]:
    """Exception types to categories, most specific first (the first match wins). Built on
    first use: the SDKs are not imported before a delivery needs them (cold start)."""
    from azure.core import exceptions as core
    from azure.servicebus import exceptions as sb

    configuration: tuple[type[BaseException], ...] = (
        ConnectionStringError,  # our parser refused the connection string at send time
        EndpointRefused,  # the host resolves to an address we never connect to
        SessionRequired,  # a session-enabled queue and SessionIdSource None
        sb.ServiceBusAuthenticationError,
        sb.ServiceBusAuthorizationError,
        sb.MessagingEntityNotFoundError,
        sb.MessagingEntityDisabledError,
        core.ClientAuthenticationError,
        core.ResourceNotFoundError,
    )
    transient: tuple[type[BaseException], ...] = (
        sb.ServiceBusServerBusyError,
        sb.OperationTimeoutError,
        sb.ServiceBusConnectionError,
        sb.ServiceBusCommunicationError,
        sb.ServiceBusError,  # the rest of the Service Bus SDK's own failures
        core.ServiceRequestError,  # the request did not reach the service
        core.ServiceResponseError,  # the connection broke before the answer
        core.AzureError,  # other statuses (5xx, 409, ...) and failures of the Azure SDKs
        TimeoutError,
        ConnectionError,
    )
    return (
        ((TooLarge, sb.MessageSizeExceededError), ErrorCategory.TOO_LARGE),
        (configuration, ErrorCategory.CONFIGURATION),
        (transient, ErrorCategory.TRANSIENT),
    )


def category_of(error: BaseException) -> ErrorCategory | None:
    """The category of an SDK (or our own known) failure; None for anything else."""
    from azure.core.exceptions import HttpResponseError

    if isinstance(error, HttpResponseError) and error.status_code in _CONFIGURATION_STATUS:
        return ErrorCategory.CONFIGURATION  # e.g. a 403 on the subscriber's blob container
    for types, category in _table():
        if isinstance(error, types):
            return category
    return None


def classify(error: BaseException, secrets: Sequence[str] = ()) -> DeliveryError:
    """TooLarge is final; Configuration needs the customer to act; Transient needs time; an
    unknown exception is our bug: reported with its traceback, and Transient."""
    if isinstance(error, IsolationFailure):  # Timeout, CircuitOpen: our own isolation's call
        return DeliveryError(
            category=ErrorCategory.TRANSIENT,
            type=error.record_type,
            message=scrub(str(error), secrets),
        )
    error = _refined(error)
    category = category_of(error)
    if category is None:
        internal_errors.report(error)
        return DeliveryError(
            category=ErrorCategory.TRANSIENT, type=INTERNAL_ERROR, message=INTERNAL_MESSAGE
        )
    # A fixed text by type, never the remote's own words (they tell what listens on a host).
    text = str(error) if isinstance(error, SessionRequired) else public_message(error)
    text = scrub(text, secrets)
    return DeliveryError(category=category, type=type(error).__name__, message=text)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove secrets from an error text before it reaches a record or a log line."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_PATTERNS.sub(r"\1***", text)[:1000]
