"""``python -m tracking_server``: the container's entry point."""

import sys

from tracking_server.server import main

sys.exit(main())
