"""Serve the Gradio demo from a script: what `vision-long demo` does, with the same options.

    python demos/app.py                      # http://127.0.0.1:7860 on the embedded default models
    python demos/app.py --db photos.lance --model longclip:longclip-L.pt --port 8080

The page itself is `vision_long.demo.app` (tabs Search, Generate, Ask) over `vision_long.demo.backend.DemoBackend`,
so it ships with the package and `vision-long demo` works after `pip install`.
"""

import sys

from vision_long.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
