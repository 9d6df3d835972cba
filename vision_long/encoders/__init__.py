"""Models that turn text and images into vectors."""

from vision_long.encoders.base import Encoder
from vision_long.encoders.longclip import CLIPConfig, LongCLIP, TextConfig, VisionConfig, stretch_positions

__all__ = ["CLIPConfig", "Encoder", "LongCLIP", "TextConfig", "VisionConfig", "stretch_positions"]
