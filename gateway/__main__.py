"""`python -m gateway` runs the prefix-gateway command line."""

from gateway.cli import main

raise SystemExit(main())
