"""Chameleon-compatible VQGAN image tokenizer (taming-transformers architecture, plain PyTorch).

Public entry points: `VQImageTokenizer` (load / save, encode / decode, previews), `VQConfig`,
`StreamingPreview` and `CodePalette` for code-by-code previews, `train_vq` for training a small
tokenizer, `finetune_decoder` for sharpening a trained one's decoder without changing its codes. Importing this package does no work.
"""

from unix_core.vq.config import VQConfig
from unix_core.vq.preview import CodePalette, StreamingPreview
from unix_core.vq.tokenizer import VQImageTokenizer
from unix_core.vq.train import VQTrainLogEntry, VQTrainStats, finetune_decoder, train_vq

__all__ = [
    "CodePalette",
    "StreamingPreview",
    "VQConfig",
    "VQImageTokenizer",
    "VQTrainLogEntry",
    "VQTrainStats",
    "finetune_decoder",
    "train_vq",
]
