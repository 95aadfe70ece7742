"""The checks' bookkeeping, shared by the chart and container checks: one "ok: ..." or
"FAILED: ..." line per check, and a closing "<label>: N passed, N failed" line."""

counts = {"passed": 0, "failed": 0}


def check(ok, what, detail=""):
    """Records one check; returns whether it passed."""
    if ok:
        counts["passed"] += 1
        print(f"ok: {what}")
    else:
        counts["failed"] += 1
        print(f"FAILED: {what}{': ' + str(detail) if detail else ''}")
    return ok


def summary(label):
    """Prints the closing line; the exit status for the script."""
    print(f"{label}: {counts['passed']} passed, {counts['failed']} failed", flush=True)
    return 1 if counts["failed"] else 0
