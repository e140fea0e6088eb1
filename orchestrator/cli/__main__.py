"""``python -m orchestrator.cli``: the ``effsweep`` command."""

from orchestrator.cli.main import main

raise SystemExit(main())
