"""Pulumi's entry point (``main: infra/`` in Pulumi.yaml)."""

import sys
from pathlib import Path

# Pulumi runs this file from infra/; the program imports the project's packages by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
