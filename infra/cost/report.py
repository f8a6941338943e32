"""The estimate as a table for a terminal or as Markdown (a pull request's job summary)."""

from __future__ import annotations

from collections.abc import Sequence

from infra.cost.diff import Change
from infra.cost.estimate import Estimate
from infra.cost.line_items import Charge
from infra.cost.pricing import count


def money(x: float) -> str:
    return f"{x:,.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    """Columns after the second are right-aligned (figures)."""
    if markdown:
        align = ["---" if i < 2 else "---:" for i in range(len(headers))]
        lines = [headers, align, *rows]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = ["-" * w for w in widths]
    return "\n".join(line(r) for r in [headers, rule, *rows])


def estimate_table(estimate: Estimate, *, markdown: bool = False) -> str:
    rows = [[i.resource, i.usage, money(i.monthly)] for i in estimate.items]
    rows.append(["total", "", money(estimate.total)])
    if markdown:
        rows[-1] = ["**total**", "", f"**{money(estimate.total)}**"]
    title = (
        f"Monthly estimate of stack {estimate.stack} ({estimate.region}), USD, before free tiers"
    )
    heading = f"### {title}" if markdown else title
    body = table(["resource", "usage assumed", "USD/month"], rows, markdown=markdown)
    return f"{heading}\n\n{body}" if markdown else f"{heading}\n{body}"


def diff_table(
    ref: str, changes: Sequence[Change], before: float, after: float, *, markdown: bool = False
) -> str:
    title = f"Difference from {ref}, per resource (USD/month)"
    if not changes:
        return f"{title}: none"
    rows = [
        [
            c.resource,
            c.what,
            "—" if c.before is None else money(c.before),
            "—" if c.after is None else money(c.after),
            f"{c.delta:+,.2f}",
        ]
        for c in changes
    ]
    rows.append(["total", "", money(before), money(after), f"{after - before:+,.2f}"])
    body = table(["resource", "what changed", ref, "now", "change"], rows, markdown=markdown)
    return f"### {title}\n\n{body}" if markdown else f"{title}\n{body}"


def totals_table(
    estimates: Sequence[Estimate], credits: Sequence[Charge], *, markdown: bool = False
) -> str:
    """Every stack's total, the free tiers taken off once (one line), and what is left; then
    what each free tier covered."""
    rows = [[f"stack {e.stack}", e.region, money(e.total)] for e in estimates]
    free = sum(c.amount for c in credits)
    rows.append(["free tiers", "once per billing account (logs: per project)", money(free)])
    rows.append(["total", "", money(sum(e.total for e in estimates) + free)])
    title = "All stacks, USD/month"
    body = table(["", "", "USD/month"], rows, markdown=markdown)
    details = [
        f"free tier {c.key}: {count(-c.quantity)} {c.unit} ({money(c.amount)})" for c in credits
    ]
    listed = "\n".join(("- " + d) if markdown else d for d in details)
    if markdown:
        return f"### {title}\n\n{body}\n\n{listed}"
    return f"{title}\n{body}\n{listed}"
