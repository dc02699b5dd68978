"""Bundled YAML configs (``cspon_rs.configs``): read them with ``importlib.resources.files("cspon_rs.configs")``."""
