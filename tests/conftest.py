pytest_plugins = ["tests.plugins.azurite", "tests.plugins.app"]
