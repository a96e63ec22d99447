"""Configuration of the taming/Chameleon VQGAN image tokenizer.

`VQConfig` holds the `ddconfig` fields of a taming `VQModel` plus `embed_dim` / `n_embed`, flattened
into one validated, immutable dataclass. Defaults are the real Chameleon tokenizer (512 px,
f16, 8192 codes of 256 dims). Two serialised forms exist:

* taming/Chameleon: `model.params` of `vqgan.yaml` (`from_taming_params` / `to_taming_params`);
  `lossconfig` and trainer-only fields are ignored, unknown `ddconfig` fields are ignored with a
  warning (taming itself swallows them through `**ignore_kwargs`).
* ours: a flat JSON object (`to_dict` / `from_dict`); unknown fields are an error there.

Invariants: every GroupNorm sees a channel count divisible by 32; the latent grid of an
`S x S` image is `(S // f, S // f)` with `f = 2 ** (len(ch_mult) - 1)` when `S % f == 0`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)

GROUPNORM_GROUPS = 32
ATTN_TYPES = ("vanilla", "none")
RESAMPLE_FILTERS = ("lanczos", "box")

# VQModel.__init__ arguments that only matter for taming's trainer or logger.
_TAMING_IGNORED_PARAMS = frozenset(
    {
        "lossconfig",
        "ckpt_path",
        "ignore_keys",
        "image_key",
        "monitor",
        "scheduler_config",
        "lr_g_factor",
        "sane_index_shape",
        "base_learning_rate",
    }
)
# VQModel.__init__ arguments that change behaviour and are only supported at their default.
_TAMING_DEFAULT_ONLY_PARAMS = {"remap": None, "colorize_nlabels": None}
# ddconfig fields that change behaviour and are only supported at their default.
_DDCONFIG_DEFAULT_ONLY = {"double_z": False, "give_pre_end": False, "use_linear_attn": False}


@dataclass(frozen=True)
class VQConfig:
    """Hyper-parameters of a taming VQGAN (`VQModel`), default = Chameleon's tokenizer."""

    embed_dim: int = 256
    n_embed: int = 8192
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 256
    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    resamp_with_conv: bool = True
    attn_type: str = "vanilla"
    tanh_out: bool = False
    # Not a taming field: encode every f x f patch on its own (zero-padded, GroupNorm statistics per patch),
    # so that a code depends only on the pixels it covers. Our embedded model uses it: flat colour always
    # gets the same code, which an LM can predict. Taming ignores the key and would encode with context.
    patchwise_encoder: bool = False
    # Not taming fields either: which part of the official centre-cropped square is resized to `resolution`
    # (fractions left, top, right, bottom; None = all of it) and with which PIL filter. The embedded model
    # uses (1/64, 1/64, 1, 1) with "box": the shapes world's three 21-px cells of a 64-px canvas
    # (pixels 1-21, 22-42, 43-63) then map to exactly 3x3 codes each, so an object's codes no longer depend
    # on where it sits (a box filter also never blends pixels across a cell edge).
    input_box: tuple[float, float, float, float] | None = None
    resample: str = "lanczos"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", _int_tuple("ch_mult", self.ch_mult))
        object.__setattr__(self, "attn_resolutions", _int_tuple("attn_resolutions", self.attn_resolutions))
        for name in ("embed_dim", "n_embed", "ch", "num_res_blocks", "z_channels", "resolution",
                     "in_channels", "out_ch"):
            value = getattr(self, name)
            lowest = 0 if name == "num_res_blocks" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"VQConfig.{name} must be an integer >= {lowest}, got {value!r}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"VQConfig.ch_mult must be a non-empty list of positive ints, got {list(self.ch_mult)}")
        bad = sorted({self.ch * m for m in (1, *self.ch_mult) if (self.ch * m) % GROUPNORM_GROUPS})
        if bad:
            raise ValueError(
                f"VQConfig: channel counts {bad} (ch={self.ch} x ch_mult) are not divisible by "
                f"{GROUPNORM_GROUPS}, which GroupNorm(32) requires; use a multiple of 32 for ch"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"VQConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attn_type not in ATTN_TYPES:
            raise ValueError(f"VQConfig.attn_type must be one of {ATTN_TYPES}, got {self.attn_type!r}")
        for name in ("resamp_with_conv", "tanh_out", "patchwise_encoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"VQConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"VQConfig.resample must be one of {RESAMPLE_FILTERS}, got {self.resample!r}")
        if self.input_box is not None:
            object.__setattr__(self, "input_box", _input_box(self.input_box))

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each side (16 for Chameleon)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        """Latent grid side for an image of `resolution` pixels (32 for Chameleon)."""
        return self.resolution // self.downsample_factor

    def to_dict(self) -> dict[str, Any]:
        """Our JSON form: a flat dict of the fields (tuples written as lists)."""
        out = dataclasses.asdict(self)
        out["ch_mult"] = list(self.ch_mult)
        out["attn_resolutions"] = list(self.attn_resolutions)
        if self.input_box is not None:
            out["input_box"] = list(self.input_box)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VQConfig":
        """Inverse of `to_dict`; unknown fields raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"VQ config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VQ config fields {unknown}; allowed: {sorted(known)}")
        return cls(**dict(data))

    def to_taming_params(self) -> dict[str, Any]:
        """`model.params` of a taming/Chameleon `vqgan.yaml` (without `lossconfig`)."""
        ddconfig: dict[str, Any] = {
            "double_z": False,
            "z_channels": self.z_channels,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "out_ch": self.out_ch,
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "dropout": float(self.dropout),
        }
        if not self.resamp_with_conv:
            ddconfig["resamp_with_conv"] = False
        if self.attn_type != "vanilla":
            ddconfig["attn_type"] = self.attn_type
        if self.tanh_out:
            ddconfig["tanh_out"] = True
        if self.patchwise_encoder:
            ddconfig["patchwise_encoder"] = True
        if self.input_box is not None:
            ddconfig["input_box"] = list(self.input_box)
        if self.resample != "lanczos":
            ddconfig["resample"] = self.resample
        return {"embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": ddconfig}

    @classmethod
    def from_taming_params(cls, params: Mapping[str, Any]) -> "VQConfig":
        """Build from `model.params` of a taming/Chameleon `vqgan.yaml`.

        `lossconfig` and trainer-only fields are ignored; `remap`, `colorize_nlabels`,
        `double_z`, `give_pre_end` and `use_linear_attn` must keep their defaults.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"vqgan.yaml model.params must be a mapping, got {type(params).__name__}")
        for required in ("embed_dim", "n_embed", "ddconfig"):
            if required not in params:
                raise ValueError(f"vqgan.yaml model.params lacks {required!r} (found {sorted(params)})")
        for name, default in _TAMING_DEFAULT_ONLY_PARAMS.items():
            if params.get(name, default) != default:
                raise ValueError(f"vqgan.yaml model.params.{name}={params[name]!r} is not supported (only {default!r})")
        extra = sorted(set(params) - {"embed_dim", "n_embed", "ddconfig"} - _TAMING_IGNORED_PARAMS
                       - set(_TAMING_DEFAULT_ONLY_PARAMS))
        if extra:
            logger.warning("ignoring unknown vqgan.yaml model.params fields %s", extra)
        dd = params["ddconfig"]
        if not isinstance(dd, Mapping):
            raise ValueError(f"vqgan.yaml ddconfig must be a mapping, got {type(dd).__name__}")
        for name, default in _DDCONFIG_DEFAULT_ONLY.items():
            if dd.get(name, default) != default:
                raise ValueError(
                    f"vqgan.yaml ddconfig.{name}={dd[name]!r} is not supported by a VQ tokenizer (only {default!r})"
                )
        required_dd = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "resolution",
                       "in_channels", "out_ch")
        missing = [k for k in required_dd if k not in dd]
        if missing:
            raise ValueError(f"vqgan.yaml ddconfig lacks {missing}")
        optional_dd = {"dropout", "resamp_with_conv", "attn_type", "tanh_out", "patchwise_encoder", "input_box",
                       "resample"}
        unknown = sorted(set(dd) - set(required_dd) - optional_dd - set(_DDCONFIG_DEFAULT_ONLY))
        if unknown:
            logger.warning("ignoring unknown vqgan.yaml ddconfig fields %s", unknown)
        fields = {k: dd[k] for k in (*required_dd, *optional_dd) if k in dd}
        return cls(embed_dim=params["embed_dim"], n_embed=params["n_embed"], **fields)


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"VQConfig.{name} must be a list of integers, got {value!r}")
    items = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise ValueError(f"VQConfig.{name} must be a list of integers, got {list(items)!r}")
    return items


def _input_box(value: Any) -> tuple[float, float, float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"VQConfig.input_box must be [left, top, right, bottom] fractions, got {value!r}")
    items = tuple(value)
    if len(items) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        raise ValueError(f"VQConfig.input_box must be 4 numbers [left, top, right, bottom], got {list(items)!r}")
    left, top, right, bottom = (float(v) for v in items)
    if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
        raise ValueError(
            f"VQConfig.input_box must satisfy 0 <= left < right <= 1 and 0 <= top < bottom <= 1, got {list(items)!r}"
        )
    return left, top, right, bottom
