"""``python -m anynet``: the ``anynet`` command."""

from .app.cli import main

raise SystemExit(main())
