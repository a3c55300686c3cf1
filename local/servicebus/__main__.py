"""`python -m local.servicebus`: see local/servicebus/__init__.py."""

from local.servicebus.emulator import main

main()
