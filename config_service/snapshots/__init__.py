"""The snapshot pipeline, in the order data flows through it:

    state.py     the whole provider set and the live tokens at one revision (one read)
    views.py     per provider: its status (`evaluate`, the only place that decides it)
                 and what each scope may see of it (`render`)
    snapshot.py  one immutable, pre-serialized snapshot per scope, checked before use
    hub.py       the current snapshots, their version, and the change signal that wakes
                 every watch stream

The store (`config_service.store`) writes; this package only reads what it wrote.
"""
