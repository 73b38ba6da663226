"""The benchmark's own test: a smoke run of ``bench/run.py`` (it measures nothing)."""
