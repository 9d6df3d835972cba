"""The Gradio demo (`vision-long demo`): `backend` holds what the tabs do, `app` the page over it."""

from vision_long.demo.backend import DemoBackend, DemoConfig, DemoInputError

__all__ = ["DemoBackend", "DemoConfig", "DemoInputError"]
