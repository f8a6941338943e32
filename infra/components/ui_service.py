"""UI: the Streamlit app on Cloud Run, calling the inference service with an ID token."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.components import cloud_run as cloudrun
from infra.options import child_options

TYPE = "housing-mlops:index:UI"
SERVICE = "housing-ui"
PORT = 8080


class UIArgs(cloudrun.WorkloadArgs, frozen=True, kw_only=True):
    image: str
    api_url: pulumi.Input[str]
    api_audience: pulumi.Input[str]
    """The audience of the UI's ID tokens: the service's operator audience, so one token both
    passes Cloud Run's IAM and reads the console's data."""
    public: bool = False
    max_instances: int = 2


class UI(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: UIArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        template: Any = {
            "service_account": args.service_account,
            "scaling": {"min_instance_count": 0, "max_instance_count": args.max_instances},
            # Streamlit keeps one websocket per browser session: session affinity.
            "session_affinity": True,
            "containers": [
                {
                    "image": args.image,
                    "ports": {"container_port": PORT},
                    "envs": [
                        cloudrun.env("API_URL", args.api_url),
                        cloudrun.env("API_AUDIENCE", args.api_audience),
                    ],
                    "resources": cloudrun.resources("1", "1Gi"),
                    "startup_probe": cloudrun.http_probe("/_stcore/health", period=2, failures=30),
                }
            ],
        }
        self.service = cloudrun.service(
            f"{name}-service",
            SERVICE,
            project=args.project,
            region=args.region,
            template=template,
            deletion_protection=args.deletion_protection,
            labels=args.labels(),
            opts=child,
        )
        public: dict[str, pulumi.Input[str]] = {"public": "allUsers"} if args.public else {}
        cloudrun.grant_invokers(
            name, self.service, public, project=args.project, region=args.region, opts=child
        )
        self.url = self.service.uri
        self.register_outputs({"url": self.url})
