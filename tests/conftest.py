pytest_plugins = ["tests.plugins.azurite"]
