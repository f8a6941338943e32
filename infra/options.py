"""Resource options shared by the components."""

from __future__ import annotations

import pulumi


def child_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None
) -> pulumi.ResourceOptions:
    """Children of a component: parented to it, and waiting on what the component waits on
    (Pulumi doesn't pass a component's ``depends_on`` down to its children)."""
    return pulumi.ResourceOptions(parent=parent, depends_on=opts.depends_on if opts else None)
