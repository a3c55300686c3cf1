"""The Service Bus emulator under its first name: imports and `python -m` keep working.

The emulator itself is the package local/servicebus/.
"""

from local.servicebus import DEFAULT_KEY, DEFAULT_MAX_MESSAGE_SIZE, KEY_NAME, Emulator, main

__all__ = ["DEFAULT_KEY", "DEFAULT_MAX_MESSAGE_SIZE", "KEY_NAME", "Emulator", "main"]

if __name__ == "__main__":
    main()
