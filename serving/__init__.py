"""The serving runtime (issue 15 item 3, docs/serving.md)."""
