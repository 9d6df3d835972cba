"""Screenshots of the demo's tabs on the embedded defaults, each with its example run: docs/demo-TAB.png.

    python scripts/demo_screenshots.py [OUT_DIR]     (default OUT_DIR: docs; needs Debian's chromium package)
"""

import sys

from vision_long.demo import DemoBackend, DemoConfig
from vision_long.demo.app import launch
from vision_long.demo.browser import screenshot_tabs

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "docs"
    app = launch(DemoBackend(DemoConfig()), port=7871, block=False)
    try:
        for tab, path in screenshot_tabs(app.local_url, out).items():
            print(f"{tab}: wrote {path}")
    finally:
        app.close()
