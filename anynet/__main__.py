"""``python -m anynet``: the ``anynet`` command."""

from .cli import main

raise SystemExit(main())
