#!/usr/bin/env python3
"""CI entry point: validate a providers.yaml (exit 0 valid, 1 invalid, 2 usage error).

Usage: python scripts/validate_config.py [PATH] [--no-env] [--format text|github|json] [--online]
All logic lives in router.validate (shared with `router validate`).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    try:
        from router.validate import main
    except ModuleNotFoundError as exc:
        if exc.name != "router":
            raise
        # Run from a checkout where the package is not installed: use the repo root.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from router.validate import main
    return main()


if __name__ == "__main__":
    sys.exit(_main())
