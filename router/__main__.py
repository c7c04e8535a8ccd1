"""``python -m router`` runs the same CLI as the ``router`` console script."""

from router.cli import main

raise SystemExit(main())
