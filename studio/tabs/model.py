"""Model tab: what is loaded (id, split a:b of L, parameters per branch, dtype, 8-bit, device, memory)."""

from __future__ import annotations

import gradio as gr
import torch

from studio.context import StudioContext
from unix_core import UniXPipeline


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def model_info(pipeline: UniXPipeline) -> dict:
    info = pipeline.describe()
    device = pipeline.device
    if device.type == "cuda":
        info["device_memory"] = {
            "allocated_bytes": torch.cuda.memory_allocated(device),
            "reserved_bytes": torch.cuda.memory_reserved(device),
            "total_bytes": torch.cuda.get_device_properties(device).total_memory,
        }
    return info


def model_markdown(info: dict) -> str:
    p = info["parameters"]
    grid_h, grid_w = info["image_grid"]
    rows = [
        ("Model", info["model"]),
        ("Prompt family", info["family"]),
        ("Backbone", info["backbone"]),
        ("Split (vision encode : vision decode of layers)", info["split"]),
        ("Parameters, total", f"{p['total']:,}"),
        ("Parameters, text branch (split layers)", f"{p['text_branch']:,}"),
        ("Parameters, vision branch (split layers)", f"{p['vision_branch']:,}"),
        ("Parameters, shared layers", f"{p['shared_layers']:,}"),
        ("Parameters, embeddings and head", f"{p['embeddings_and_head']:,}"),
        ("Dtype", info["dtype"]),
        ("8-bit", "yes" if info["load_in_8bit"] else "no"),
        ("Device", info["device"]),
        ("Weights in memory", _mib(info["memory_bytes"])),
        ("Images", f"{info['image_size']} px, {grid_h}×{grid_w} codes of {info['codebook_size']}"),
        ("Text vocabulary", f"{info['text_vocab_size']:,}"),
    ]
    if "device_memory" in info:
        m = info["device_memory"]
        used = f"{_mib(m['allocated_bytes'])} allocated, {_mib(m['reserved_bytes'])} reserved"
        rows.append(("Device memory", f"{used} of {_mib(m['total_bytes'])}"))
    return "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def build(ctx: StudioContext) -> None:
    info = model_info(ctx.pipeline)
    table = gr.Markdown(model_markdown(info), elem_id="model-table")
    with gr.Accordion("As JSON", open=False):
        raw = gr.JSON(info, label="UniXPipeline.describe()")
    refresh = gr.Button("Refresh memory figures", size="sm")

    def refresh_info():
        fresh = model_info(ctx.pipeline)
        return model_markdown(fresh), fresh

    refresh.click(refresh_info, outputs=[table, raw], api_visibility="private")
