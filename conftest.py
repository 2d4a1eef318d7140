"""Wires the suite: the deploycheck plugin (plugins/) and the deployment stages (fixtures/)."""

pytest_plugins = ["plugins.deploycheck", "fixtures.stages"]
