"""Start Uni-X Studio: parse arguments, pick device and dtype, load the weights, launch the Gradio app.

    python launch.py                      # embedded default model, CPU, http://127.0.0.1:7860
    python launch.py --model PATH_OR_HUB_ID --device cuda --dtype bfloat16
    python launch.py --model ID --load-8bit --device cuda
    python launch.py --model ID --device-map auto        # split a large model over several GPUs
    python launch.py --share --auth user:password        # public link (always use --auth with it)

This is the only module that parses arguments, chooses devices, loads weights and calls `launch()`.
Startup failures (missing files, wrong layout, no GPU for 8-bit, ...) end with one readable message
and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("launch")

DTYPES = ("auto", "float32", "bfloat16", "float16")


class StartupError(Exception):
    """A problem the user can fix (bad flag, missing model, no GPU); printed without a traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="launch.py", description="Uni-X Studio: a Gradio studio for Uni-X models.")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=None,
        help="checkpoint folder or hub id (official Uni-X layout); default: the embedded shapes-world model",
    )
    model.add_argument(
        "--vqgan", default=None, help="folder with vqgan.ckpt + vqgan.yaml when it is not inside the model folder"
    )
    model.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    model.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights dtype; auto = float32 on CPU, bfloat16 on GPUs that support it, else float16",
    )
    model.add_argument("--load-8bit", action="store_true", help="load the weights in 8 bits (bitsandbytes LLM.int8; CUDA, or CPU where bitsandbytes supports it)")
    model.add_argument(
        "--device-map",
        default=None,
        choices=["auto"],
        help="'auto': split a large model over several GPUs with accelerate",
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--share", action="store_true", help="create a public Gradio link")
    serve.add_argument("--auth", default=None, help="user:password, or a file with one user:password per line")
    serve.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="requests that may wait; beyond that users are told the studio is busy (default 16)",
    )
    serve.add_argument("--concurrency", type=int, default=1, help="generations run at once per device (default 1)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of startup failures")
    return parser.parse_args(argv)


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """`user:password`, or a file of such lines (blank lines and # comments ignored)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        where = f"auth file {path}"
    elif ":" in value:
        entries, where = [value], "--auth"
    else:
        raise StartupError(f"--auth {value!r} is neither user:password nor an existing file of user:password lines")
    pairs = []
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise StartupError(f"{where}: entries must look like user:password (both non-empty)")
        pairs.append((user, password))
    if not pairs:
        raise StartupError(f"{where} holds no user:password line")
    return pairs


def pick_device_and_dtype(args: argparse.Namespace):
    import torch

    device = args.device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise StartupError(f"--device {device!r} is not a device name (cpu, cuda, cuda:N, mps)") from err
    # --load-8bit is checked by the loader itself: bitsandbytes may or may not have int8 kernels for the device.
    gpu_needed = args.device_map is not None
    if parsed.type == "cuda" or gpu_needed:
        if not torch.cuda.is_available():
            what = "--device-map auto" if args.device_map else f"--device {device}"
            raise StartupError(f"{what} needs a CUDA GPU, and torch sees none on this machine; use --device cpu")
        if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise StartupError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if parsed.type != "cuda":
            device = "cuda"
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise StartupError("--device mps is not available on this machine; use --device cpu")
    if args.dtype == "auto":
        if torch.device(device).type == "cpu":
            dtype = torch.float32
        elif torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        else:
            dtype = torch.float16
    else:
        dtype = getattr(torch, args.dtype)
    return device, dtype


def load_pipeline(args: argparse.Namespace):
    from unix_core import UniXPipeline

    device, dtype = pick_device_and_dtype(args)
    logger.info(
        "loading %s on %s (%s)", args.model or "the embedded default model", device, str(dtype).replace("torch.", "")
    )
    try:
        return UniXPipeline.from_pretrained(
            args.model,
            device=device,
            dtype=dtype,
            load_in_8bit=args.load_8bit,
            vqgan=args.vqgan,
            device_map=args.device_map,
        )
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one readable line
        logger.debug("loading failed", exc_info=True)
        text = str(err).strip()
        message = text.splitlines()[0] if text else type(err).__name__
        if args.model is None and "embedded default" in message:
            message += " (start with --model PATH_OR_HUB_ID)"
        raise StartupError(f"could not load the model: {message}") from err


def check_serving(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise StartupError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.max_queue < 1:
        raise StartupError(f"--max-queue must be at least 1, got {args.max_queue}")
    if args.concurrency < 1:
        raise StartupError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.threads is not None and args.threads < 1:
        raise StartupError(f"--threads must be at least 1, got {args.threads}")


def serving_warnings(args: argparse.Namespace, auth) -> list[str]:
    """Warnings about who can reach the studio (printed before it starts)."""
    notes = []
    if args.share and auth is None:
        notes.append(
            "WARNING: --share makes this studio reachable by anyone who has the link, without a password. "
            "Add --auth user:password (or --auth FILE) to restrict it."
        )
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        notes.append(f"WARNING: listening on {args.host} without --auth; anyone on your network can use the studio.")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        check_serving(args)
        auth = parse_auth(args.auth)
        for note in serving_warnings(args, auth):
            print(note, file=sys.stderr)
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        pipeline = load_pipeline(args)
        from studio.app import build_app, launch_options

        demo = build_app(pipeline, max_queue=args.max_queue, concurrency=args.concurrency)
    except StartupError as err:
        print(f"Uni-X Studio could not start: {err}", file=sys.stderr)
        return 2
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            auth=auth,
            **launch_options(),
        )
    except OSError as err:
        print(f"Uni-X Studio could not start the server: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
