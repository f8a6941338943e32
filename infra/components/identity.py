"""Identity: one service account per workload, and Workload Identity Federation for CI.

Grants that name a resource (the bucket, the password secret, a Cloud Run service) live beside
that resource's component; project-wide roles are only those that can't be scoped lower.
"""

from __future__ import annotations

import msgspec
import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from infra.options import child_options

TYPE = "housing-mlops:index:Identity"
WORKLOADS = ("pipeline", "mlflow", "api", "ui", "monitor", "batch")
#: Project roles of each workload: only Cloud SQL's client role has no narrower scope.
PROJECT_ROLES = {
    "pipeline": ("roles/cloudsql.client",),
    "mlflow": ("roles/cloudsql.client",),
    "api": (),
    "ui": (),
    "monitor": (),
    "batch": (),
}
#: What the deploy workflow needs for ``pulumi up`` of the whole stack, and why. An owner runs the
#: first ``up`` (which creates these grants); CI's later runs only keep them.
CI_ROLES = {
    "roles/artifactregistry.admin": "the image repository and its cleanup policies",
    "roles/cloudscheduler.admin": "the retraining schedule",
    "roles/cloudsql.admin": "the instance, its databases and its user",
    "roles/iam.roleAdmin": (
        "the custom roles of the monitor (start a retrain) and of batch runners (run the batch "
        "job with overrides), nothing else"
    ),
    "roles/iam.serviceAccountAdmin": "the workload accounts and grants on them",
    "roles/iam.workloadIdentityPoolAdmin": "the GitHub pool and provider this trust lives in",
    "roles/monitoring.viewer": (
        "the rollout's cross-check: each revision's request counts in Cloud Monitoring"
    ),
    "roles/resourcemanager.projectIamAdmin": (
        "project-level grants of the workloads; conditioned so it can grant only those roles"
    ),
    "roles/run.admin": "the Cloud Run services, jobs and their invoker grants",
    "roles/secretmanager.admin": "the database password secret and its accessor grants",
    "roles/serviceusage.serviceUsageAdmin": "turning on the APIs the stack needs",
    "roles/storage.admin": "the bucket, its lifecycle and its grants",
}
#: CI's project IAM admin may add or remove only these roles (an IAM condition on its grant):
#: otherwise ``projectIamAdmin`` could grant itself ``roles/owner``.
GRANTABLE_ROLES = tuple(sorted({r for roles in PROJECT_ROLES.values() for r in roles}))
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DEFAULT_PRODUCTION_REF = "refs/heads/main"


def role_label(role: str) -> str:
    """``roles/run.admin`` → ``run-admin`` (a resource-name suffix)."""
    return role.removeprefix("roles/").replace(".", "-").lower()


class IdentityArgs(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    github_repository: str = ""
    """``owner/name``: only this repository's workflows may act as the CI account."""
    github_repository_id: str = ""
    github_repository_owner_id: str = ""
    github_ref: str = ""
    """The only ref whose workflows are trusted; empty: any."""
    github_environment: str = ""
    """The GitHub environment a trusted job runs in; empty: any."""


def attribute_condition(args: IdentityArgs) -> str:
    """The provider's CEL condition: tokens failing it are refused before any binding is read.
    Ids pin the repository against a re-registered name; ref and environment pin the branch and
    the protected environment that may deploy."""
    clauses = [f"assertion.repository == '{args.github_repository}'"]
    if args.github_repository_id:
        clauses.append(f"assertion.repository_id == '{args.github_repository_id}'")
    if args.github_repository_owner_id:
        clauses.append(f"assertion.repository_owner_id == '{args.github_repository_owner_id}'")
    if args.github_ref:
        clauses.append(f"assertion.ref == '{args.github_ref}'")
    if args.github_environment:
        clauses.append(f"assertion.environment == '{args.github_environment}'")
    return " && ".join(clauses)


def grantable_roles_condition(roles: tuple[str, ...]) -> str:
    """IAM condition limiting which roles a project IAM admin may grant or revoke."""
    listed = ", ".join(f"'{r}'" for r in roles)
    return f"api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([{listed}])"


def account_id(workload: str) -> str:
    return f"housing-{workload}"


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
                account_id=account_id(workload),
                display_name=f"housing-mlops {workload}",
                project=args.project,
                opts=child,
            )
            for workload in WORKLOADS
        }
        self.project_grants: dict[str, list[pulumi.Resource]] = {}
        for workload, roles in PROJECT_ROLES.items():
            self.project_grants[workload] = [
                gcp.projects.IAMMember(
                    f"{name}-{workload}-{role_label(role)}",
                    project=args.project,
                    role=role,
                    member=self.member(workload),
                    opts=child,
                )
                for role in roles
            ]
        self.ci = None
        self.workload_identity_provider = None
        if args.github_repository:
            self._github(name, args, child)
        self.register_outputs({})

    @staticmethod
    def spelled_email(project: str, workload: str) -> str:
        """The email GCP gives a workload's account (``<accountId>@<project>.iam...``), known
        before the account exists: for a setting that names it without depending on it."""
        return f"{account_id(workload)}@{project}.iam.gserviceaccount.com"

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
        # A deleted pool's id stays taken for 30 days (409 on re-create): a fresh suffix per
        # stack lifetime lets dev be destroyed and re-created at once.
        suffix = random.RandomString(
            f"{name}-github-suffix", length=6, special=False, upper=False, opts=child
        )
        pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-github-pool",
            workload_identity_pool_id=pulumi.Output.concat("github-", suffix.result),
            display_name="GitHub Actions",
            project=args.project,
            opts=child,
        )
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-github-provider",
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=pulumi.Output.concat("actions-", suffix.result),
            project=args.project,
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.repository_id": "assertion.repository_id",
                "attribute.ref": "assertion.ref",
            },
            attribute_condition=attribute_condition(args),
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_ISSUER),
            opts=child,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-ci-workload-identity",
            service_account_id=self.ci.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat(
                "principalSet://iam.googleapis.com/",
                pool.name,
                *(
                    ("/attribute.repository_id/", args.github_repository_id)
                    if args.github_repository_id
                    else ("/attribute.repository/", repo)
                ),
            ),
            opts=child,
        )
        for role in CI_ROLES:
            condition = None
            if role == "roles/resourcemanager.projectIamAdmin":
                condition = gcp.projects.IAMMemberConditionArgs(
                    title="grants-only-workload-roles",
                    description="CI may grant or revoke only the workloads' project roles",
                    expression=grantable_roles_condition(GRANTABLE_ROLES),
                )
            gcp.projects.IAMMember(
                f"{name}-ci-{role_label(role)}",
                project=args.project,
                role=role,
                member=self.ci.member,
                condition=condition,
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
