"""Kept importable: installs made before the ID-token plugin moved to
``housing_platform.id_token`` name ``pipeline.id_token:IdTokenHeaderProvider`` as MLflow's
``google-id-token`` request-header entry point. Nothing in the project imports this module."""

from housing_platform.id_token import GoogleIdToken, IdTokenHeaderProvider

__all__ = ["GoogleIdToken", "IdTokenHeaderProvider"]
