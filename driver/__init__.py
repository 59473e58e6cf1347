"""Kaki host driver."""
