"""Whether Azure SDK tracing is on: our direct paths past the SDKs' general ones (the table
read in shared/storage/tablequery.py, the AMQP encoding in shared/dispatch/amqpbytes.py) then
step aside, since tracing records requests and adds properties to messages."""


def traced() -> bool:
    from azure.core.settings import settings

    return settings.tracing_enabled() or settings.tracing_implementation() is not None
