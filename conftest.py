"""Wires the suite: the deploycheck plugin (plugins/deploycheck), which loads the stage fixtures (fixtures/) when
a run is asked for. Installed as a package, the plugin is loaded by its pytest11 entry point instead."""

pytest_plugins = ["deploycheck.plugin"]
