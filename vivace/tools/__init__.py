"""Tools built on the engine (run with python -m vivace.tools.NAME)."""
