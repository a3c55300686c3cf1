pytest_plugins = [
    "tests.plugins.azurite",
    "tests.plugins.localhost",
    "tests.plugins.app",
    "tests.plugins.servicebus",
    "tests.plugins.blackhole",
]
