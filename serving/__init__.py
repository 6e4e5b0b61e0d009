"""Berth's data plane: follows the registry's routing and answers predictions from loaded models."""
