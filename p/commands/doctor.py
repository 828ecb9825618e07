"""`p doctor`: the local store's damaged record files, and moving them aside."""

from __future__ import annotations

from ..store import Store, damaged_line


def doctor(fix: bool) -> int:
    """Reads every record file (not the index); exit 1 while damaged ones remain."""
    store = Store()
    if fix:
        moved = store.quarantine()
        for path, target in moved:
            print(f"p: moved damaged job record {path} to {target}")
        print(f"p: {len(moved)} damaged job record(s) moved aside; the index is rebuilt from the others")
        return 0
    jobs = store.rebuild()  # not trusting the index: it may hide a file damaged in place
    for path, problem in store.damaged:
        print(damaged_line(path, problem))
    if store.damaged:
        print(f"p: {len(store.damaged)} damaged job record(s) of {len(jobs) + len(store.damaged)}; "
              f"`p doctor --fix` moves them to {store.quarantine_dir}")
        return 1
    print(f"p: all {len(jobs)} job records are readable")
    return 0
