"""``python -m retention`` is the ``retention`` command."""

from retention.cli import main

raise SystemExit(main())
