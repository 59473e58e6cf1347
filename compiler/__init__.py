"""Kaki compiler: model graph -> tiled, scheduled command stream."""
