"""What a stack costs and what it can carry, from the offline plan (``nox -s cost``).

Pure functions hold the logic: ``pricing`` (usage and unit prices → line items, one function per
billed product), ``estimate`` (the plan's resources and the stack's ``cost`` section → usage),
``free_tier``, ``capacity`` (instances a target load needs, from ``nox -s bench``'s measured
throughput), ``diff`` and ``report``. Thin adapters do the I/O: ``prices`` reads the committed
price snapshot (``infra/prices/<region>.yaml``), ``worktree`` plans a git ref in a throwaway
worktree, ``billing_catalog`` refreshes the snapshot from the Cloud Billing Catalog API
(``nox -s prices``), ``cli`` is the command.
"""
