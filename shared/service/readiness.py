"""Whether the app can serve: its settings complete and its storage answering (GET /v1/health).

The reason a check fails goes to the log only (it may name hosts or settings); callers get
`Unavailable` with a fixed text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from shared.errors import Unavailable
from shared.settings import SettingsError

if TYPE_CHECKING:
    from shared.services import Services

log = logging.getLogger("shared.api")  # the name operators' log queries already use


async def check(open_services: Callable[[], Awaitable[Services]]) -> None:
    """Open the app's services and ask its storage for its properties; `Unavailable` if
    either fails. Takes the opener, not `Services`: incomplete settings fail the opening."""
    try:
        services = await open_services()
        await services.storage.tables.get_service_properties()
    except SettingsError as e:  # names the setting, never its value: for the log
        log.error("health check: %s", e)
        raise Unavailable("the app's settings are incomplete") from None
    except Exception as e:  # the reason goes to the log only: it may name hosts or settings
        log.warning("health check: storage does not answer: %s", type(e).__name__)
        raise Unavailable("the app's storage does not answer") from None
