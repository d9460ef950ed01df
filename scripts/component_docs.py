"""Regenerate the input and output tables of components/*/README.md from the components.

    .venv/bin/python scripts/component_docs.py            # rewrite the READMEs whose tables changed
    .venv/bin/python scripts/component_docs.py --check    # exit 1 naming each stale README

The tables come from each component's signature and docstring (charops.pipeline.component_docs);
tests/unit/test_component_docs.py fails while a README is stale.
"""

from __future__ import annotations

import argparse
import sys

from charops.errors import CharopsError
from charops.pipeline.component_docs import update


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a README is stale")
    args = ap.parse_args(argv)
    try:
        stale = update(check=args.check)
    except CharopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"{'stale' if args.check else 'updated'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
