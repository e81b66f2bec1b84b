"""``python -m invariants``: the same as ``invariant-run``."""

from invariants.cli import main

raise SystemExit(main())
