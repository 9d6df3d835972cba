"""Screenshots of the demo's tabs on the embedded defaults, each with its example run: docs/demo-TAB.png.

    python scripts/demo_screenshots.py [OUT_DIR [TAB ...]]   (default: docs, every tab; needs Debian's chromium)
"""

import sys

from vision_long.demo import DemoBackend, DemoConfig
from vision_long.demo.app import TABS, launch
from vision_long.demo.browser import screenshot_tabs

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "docs"
    tabs = tuple(sys.argv[2:]) or TABS
    app = launch(DemoBackend(DemoConfig()), port=7871, block=False)
    try:
        for tab, path in screenshot_tabs(app.local_url, out, tabs=tabs).items():
            print(f"{tab}: wrote {path}")
    finally:
        app.close()
