"""Kaki control-core firmware (C) and its build (`python -m firmware.build`, `make firmware`)."""
