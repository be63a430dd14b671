"""Renderings of plans, state and progress, computed only from their JSON forms."""
