"""Screenshots of the demo's tabs on the embedded defaults, each with its example run: OUT_DIR/demo-TAB.png.

    python scripts/demo_screenshots.py [OUT_DIR [TAB ...]]   (default: docs, every tab; needs Debian's chromium)
"""

import argparse

from vision_long.demo import DemoBackend, DemoConfig
from vision_long.demo.app import TABS, launch
from vision_long.demo.browser import screenshot_tabs

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="docs", help="directory for the PNGs (default: %(default)s)")
    parser.add_argument("tabs", nargs="*", metavar="TAB", help=f"tabs to take: {', '.join(TABS)} (default: all)")
    args = parser.parse_args()
    if unknown := sorted(set(args.tabs) - set(TABS)):
        parser.error(f"unknown tab(s) {', '.join(unknown)}; choose from {', '.join(TABS)}")
    app = launch(DemoBackend(DemoConfig()), port=7871, block=False)
    try:
        for tab, path in screenshot_tabs(app.local_url, args.out, tabs=tuple(args.tabs) or TABS).items():
            print(f"{tab}: wrote {path}")
    finally:
        app.close()
