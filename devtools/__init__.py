"""Developer tools run by nox sessions: not part of the wheel or of any image."""
