"""Watching the live model: its inputs, its realised error, replay, and the retrain trigger."""
