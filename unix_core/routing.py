"""Per-layer modality routing trace: which weights processed each token, and what that did.

:func:`trace_routing` runs one instrumented forward pass over a single sequence (a prompt, or a prompt plus
what was generated) and records, per depth:

- per token, the weights that processed it: ``"text"`` (text branch of a split depth), ``"vision"``
  (vision twin) or ``"shared"``;
- per modality, the mean L2 norm of the hidden states after that depth;
- at shared depths, per modality of the query, the mean attention mass on keys of the same modality and
  on keys of the other modality (averaged over heads and queries; the two add up to 1);
- at split depths, per modality, how different the twin branches are: ``||Δ_own − Δ_twin|| / ||Δ_own||``,
  where ``Δ`` is a branch's update of the residual stream for that modality's tokens, computed on the same
  input (0: the twins act identically, as right after conversion; 1 or more: fully specialised).

The trace computes each modality at each split depth twice (own branch and twin) and full attention maps at
shared depths, so it costs a few forward passes; cheap for the embedded model, opt-in for large ones.
Its final hidden states equal the model's own forward pass (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .model import SHARED, TEXT, VISION, UniXForCausalLM
from .modality import ModalityPack, config_vision_mask


def describe_split(encode: int, decode: int) -> str:
    """Which layers of an ``encode:decode`` split have separate text and vision branches, in words."""
    if encode and decode:
        return (f"the first {encode} and last {decode} layers have separate text and vision branches, "
                "the middle is shared")
    if not encode and not decode:
        return "no layer is separated; every layer is shared"
    end, n = ("first", encode) if encode else ("last", decode)
    which = f"the {end} layer has" if n == 1 else f"the {end} {n} layers have"
    return f"{which} separate text and vision branches, the others are shared"


@dataclass
class DepthTrace:
    depth: int
    kind: str  # "split" or "shared"
    routes: list[str]  # per token: "text" | "vision" | "shared"
    hidden_norm: dict[str, float]  # modality -> mean L2 norm after this depth
    attention_same: dict[str, float] = field(default_factory=dict)  # shared depths: query modality -> mass
    attention_other: dict[str, float] = field(default_factory=dict)
    branch_divergence: dict[str, float] = field(default_factory=dict)  # split depths: modality -> divergence


@dataclass
class RoutingTrace:
    token_ids: list[int]
    modalities: list[str]  # per token: "text" | "vision"
    depths: list[DepthTrace]
    num_vision_encode_layers: int
    num_vision_decode_layers: int
    final_hidden: torch.Tensor | None = None  # (T, C), for checks; not serialised

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("final_hidden")
        return out

    def route_grid(self) -> list[list[str]]:
        """depth x token matrix of "text" / "vision" / "shared"."""
        return [d.routes for d in self.depths]


def _mean_norm(h: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    norms = h.float().norm(dim=-1)  # (T,)
    out = {}
    for name, m in ((TEXT, ~mask), (VISION, mask)):
        if bool(m.any()):
            out[name] = float(norms[m].mean())
    return out


@torch.inference_mode()
def trace_routing(model: UniXForCausalLM, input_ids: torch.Tensor | list[int]) -> RoutingTrace:
    """Trace one sequence (1-D ids or a (1, T) tensor) through ``model``."""
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=model.device).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("input_ids must hold at least one token")
    cfg, inner = model.config, model.model
    T = ids.shape[1]
    is_vision = config_vision_mask(ids, cfg)
    valid = torch.ones_like(ids, dtype=torch.bool)
    positions = torch.arange(T, device=ids.device)[None]
    h = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(positions, h.dtype)
    packs = {
        TEXT: ModalityPack.build(~is_vision, positions, valid, cos, sin),
        VISION: ModalityPack.build(is_vision, positions, valid, cos, sin),
    }
    vis = is_vision[0]
    depths = []
    for depth in range(cfg.num_hidden_layers):
        if cfg.is_split_depth(depth):
            out = torch.empty_like(h)
            divergence = {}
            for branch, twin in ((TEXT, VISION), (VISION, TEXT)):
                pack = packs[branch]
                if pack.is_empty:
                    continue
                x = pack.gather(h)
                counts = None if pack.identity else pack.counts
                args = (pack.cos, pack.sin, pack.positions, pack.valid, counts, None)
                own = inner.branch_layer(depth, branch)(x, *args)
                other = inner.branch_layer(depth, twin)(x, *args)
                delta_own, delta_twin = (own - x)[pack.slot], (other - x)[pack.slot]
                divergence[branch] = float((delta_own - delta_twin).norm() / delta_own.norm().clamp_min(1e-12))
                pack.scatter_(own, out)
            h = out
            routes = [VISION if v else TEXT for v in vis.tolist()]
            trace = DepthTrace(depth, "split", routes, _mean_norm(h[0], vis), branch_divergence=divergence)
        else:
            layer = inner.layers[depth]
            q, k, _ = layer.self_attn.project(layer.input_layernorm(h), cos, sin)
            same, other = _attention_mass(q, k, vis)
            h = layer(h, cos, sin, positions, valid)
            trace = DepthTrace(depth, "shared", [SHARED] * T, _mean_norm(h[0], vis), same, other)
        depths.append(trace)
    return RoutingTrace(
        token_ids=ids[0].tolist(),
        modalities=[VISION if v else TEXT for v in vis.tolist()],
        depths=depths,
        num_vision_encode_layers=cfg.num_vision_encode_layers,
        num_vision_decode_layers=cfg.num_vision_decode_layers,
        final_hidden=inner.norm(h)[0],
    )


def _attention_mass(q: torch.Tensor, k: torch.Tensor, vis: torch.Tensor) -> tuple[dict, dict]:
    """Causal attention probabilities of q (1, H, T, D) over k (1, H_kv, T, D), split by key modality."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)).float() / q.shape[-1] ** 0.5  # (1, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)[0].mean(dim=0)  # (T, T)
    on_vision = probs[:, vis].sum(dim=-1)  # (T,) mass each query puts on vision keys
    same, other = {}, {}
    for name, m in ((TEXT, ~vis), (VISION, vis)):
        if bool(m.any()):
            mass_vision = float(on_vision[m].mean())
            same[name] = mass_vision if name == VISION else 1.0 - mass_vision
            other[name] = 1.0 - same[name]
    return same, other
