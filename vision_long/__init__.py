"""vision_long: remove CLIP's 77-token text limit on your own checkpoints.

The small public API; everything else lives in the subpackages (`encoders`, `kernels`, `diffusion`, ...).
"""

from vision_long.checkpoints import CheckpointError, load_native, save_native
from vision_long.encoders.base import Encoder
from vision_long.encoders.hf_format import export_hf
from vision_long.encoders.loading import load_encoder
from vision_long.encoders.longclip import LongCLIP, stretch_positions
from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

__version__ = "0.1.0"

__all__ = [
    "CLIPTokenizer",
    "CheckpointError",
    "Encoder",
    "LongCLIP",
    "TokenizerConfig",
    "export_hf",
    "load_encoder",
    "load_native",
    "save_native",
    "stretch_positions",
]
