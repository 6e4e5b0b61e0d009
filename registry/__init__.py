"""Berth's control plane: models, immutable versions, aliases and the change feed."""
