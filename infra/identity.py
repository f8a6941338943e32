"""Identity: one service account per workload, and Workload Identity Federation for CI.

Grants that name a resource (the bucket, the password secret, a Cloud Run service) live beside
that resource's component; project-wide roles are only those that can't be scoped lower.
"""

from __future__ import annotations

import msgspec
import pulumi
import pulumi_gcp as gcp

from infra.options import child_options

TYPE = "housing-mlops:index:Identity"
WORKLOADS = ("pipeline", "mlflow", "api", "ui")
#: Project roles of each workload: only Cloud SQL's client role has no narrower scope.
PROJECT_ROLES = {
    "pipeline": ("roles/cloudsql.client",),
    "mlflow": ("roles/cloudsql.client",),
    "api": (),
    "ui": (),
}
#: What the deploy workflow needs for ``pulumi up`` of the whole stack.
CI_ROLES = (
    "roles/artifactregistry.admin",
    "roles/cloudscheduler.admin",
    "roles/cloudsql.admin",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.workloadIdentityPoolAdmin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/serviceusage.serviceUsageAdmin",
    "roles/storage.admin",
)
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def role_label(role: str) -> str:
    """``roles/run.admin`` → ``run-admin`` (a resource-name suffix)."""
    return role.removeprefix("roles/").replace(".", "-").lower()


class IdentityArgs(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    github_repository: str = ""
    """``owner/name``: only this repository's workflows may act as the CI account."""


class Identity(pulumi.ComponentResource):
    accounts: dict[str, gcp.serviceaccount.Account]
    ci: gcp.serviceaccount.Account | None
    workload_identity_provider: pulumi.Output[str] | None

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        child = child_options(self, opts)
        self.accounts = {
            workload: gcp.serviceaccount.Account(
                f"{name}-{workload}",
                account_id=f"housing-{workload}",
                display_name=f"housing-mlops {workload}",
                project=args.project,
                opts=child,
            )
            for workload in WORKLOADS
        }
        for workload, roles in PROJECT_ROLES.items():
            for role in roles:
                gcp.projects.IAMMember(
                    f"{name}-{workload}-{role_label(role)}",
                    project=args.project,
                    role=role,
                    member=self.member(workload),
                    opts=child,
                )
        self.ci = None
        self.workload_identity_provider = None
        if args.github_repository:
            self._github(name, args, child)
        self.register_outputs({})

    def member(self, workload: str) -> pulumi.Output[str]:
        return self.accounts[workload].member

    def email(self, workload: str) -> pulumi.Output[str]:
        return self.accounts[workload].email

    def platform_members(self) -> list[pulumi.Output[str]]:
        """The CI account when there is one: it deploys, smoke-tests and reports on models."""
        return [self.ci.member] if self.ci is not None else []

    def _github(self, name: str, args: IdentityArgs, child: pulumi.ResourceOptions) -> None:
        repo = args.github_repository
        self.ci = gcp.serviceaccount.Account(
            f"{name}-ci",
            account_id="housing-ci",
            display_name=f"housing-mlops CI ({repo})",
            project=args.project,
            opts=child,
        )
        pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-github-pool",
            workload_identity_pool_id="github",
            display_name="GitHub Actions",
            project=args.project,
            opts=child,
        )
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-github-provider",
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github-actions",
            project=args.project,
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.ref": "assertion.ref",
            },
            # Tokens from any other repository are refused before any binding is looked at.
            attribute_condition=f"assertion.repository == '{repo}'",
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_ISSUER),
            opts=child,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-ci-workload-identity",
            service_account_id=self.ci.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat(
                "principalSet://iam.googleapis.com/", pool.name, "/attribute.repository/", repo
            ),
            opts=child,
        )
        for role in CI_ROLES:
            gcp.projects.IAMMember(
                f"{name}-ci-{role_label(role)}",
                project=args.project,
                role=role,
                member=self.ci.member,
                opts=child,
            )
        # Deploying a service or job that runs as a workload account is "acting as" it.
        for workload, account in self.accounts.items():
            gcp.serviceaccount.IAMMember(
                f"{name}-ci-acts-as-{workload}",
                service_account_id=account.name,
                role="roles/iam.serviceAccountUser",
                member=self.ci.member,
                opts=child,
            )
        self.workload_identity_provider = provider.name
