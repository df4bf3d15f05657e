"""``fastst <command> ...``: the one command-line entry point.

``fastst train`` and ``fastst optimize`` take Hydra overrides (``key=value``, ``group=option``); the
other commands take flags. Every command reports a user error as one ``error: ...`` line with exit
status 2 (``fastst.errors.command``); ``FASTST_DEBUG=1`` shows the traceback.

The commands are a table (:data:`COMMANDS`): adding one is one line here plus its module's ``main``.
Each ``main(argv) -> int`` is imported only when its command runs, so ``fastst stylize`` never
imports Lightning or Hydra.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # inside the package: a regular install has it too


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"; argparse commands: main(argv) -> int; Hydra commands: f(cfg)
    help: str
    hydra_config: str | None = None  # the primary config of a Hydra command
    interrupted: str | None = None  # what re-running does, printed after Ctrl-C's "error: interrupted"
    stage: str = ""  # the stage of the data flow (a subpackage): its heading in --help


COMMANDS: dict[str, Command] = {
    # data
    "styles": Command(
        "fastst.cli.styles:main", "list the shipped styles; fetch their images into the cache", stage="data"
    ),
    "build-cache": Command(
        "fastst.cli.build_cache:main", "decode a photo folder once into a uint8 cache for training", stage="data"
    ),
    "download-coco": Command(
        "fastst.cli.download_coco:main", "download and unpack a COCO image split (resumable)", stage="data"
    ),
    # training (and the optimisation baseline beside it)
    "train": Command(
        "fastst.training.pipeline:train_command",
        "train a style model: fastst train style=NAME data.root=PHOTOS [key=value ...]",
        hydra_config="train",
        interrupted="re-run the same command to resume",
        stage="training",
    ),
    "optimize": Command(
        "fastst.baseline.optimize:optimize",
        "stylize one photo by pixel optimisation (Gatys): fastst optimize style=NAME content=PHOTO",
        hydra_config="optimize",
        stage="training",
    ),
    # export
    "export": Command(
        "fastst.cli.export:main", "checkpoint -> model file (.safetensors; ONNX, TorchScript)", stage="export"
    ),
    "quantize": Command(
        "fastst.cli.quantize:main",
        "int8 post-training quantization of a .onnx model, checked on held-out photos",
        stage="export",
    ),
    # inference
    "stylize": Command(
        "fastst.cli.stylize:main",
        "stylize images, folders and videos with a model file (.safetensors or .onnx)",
        stage="inference",
    ),
    # evaluation
    "evaluate": Command(
        "fastst.cli.evaluate:evaluate_main",
        "content/style loss and SSIM of a model on held-out photos",
        stage="evaluation",
    ),
    "evaluate-video": Command(
        "fastst.cli.evaluate_video:main",
        "flicker of stylized video (temporal warping error), style cost, time per frame",
        stage="evaluation",
    ),
    "compare": Command(
        "fastst.cli.evaluate:compare_main", "fast model vs pixel optimisation of the same loss", stage="evaluation"
    ),
    # serve
    "serve": Command(
        "fastst.cli.serve:main",
        "a local web page to try model files: drop a photo, pick a model, download the result",
        stage="serve",
    ),
    # benchmarks (tools, never imported by the product)
    "bench": Command("fastst.cli.bench:main", "training and inference speed against plain PyTorch", stage="benchmarks"),
    "loss-scales": Command("fastst.cli.loss_scales:main", "loss magnitudes across loss networks", stage="benchmarks"),
}


def _load(target: str) -> Callable:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def config_dir() -> str:
    """The Hydra config folder shipped inside the package."""
    if not CONFIG_DIR.is_dir():  # a broken install; nothing else can work
        raise SystemExit(f"error: fastst configs not found at {CONFIG_DIR}; reinstall fastst")
    return str(CONFIG_DIR)


def _log_to_files(message: str) -> None:
    """Put the ``error:`` line into the run's log file too (the terminal already got it on stderr)."""
    import logging

    record = logging.LogRecord("fastst", logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def hydra_entry(config_name: str, target: str, skip: int = 1, interrupted: str | None = None) -> Callable[[], int]:
    """A function that runs ``target`` ("module:function") on the config Hydra composes from ``sys.argv``.

    Hydra reads the overrides from ``sys.argv[skip:]`` (``skip=2`` drops ``train`` of ``fastst train``).
    Lightning's DDP launcher runs the whole command line again in each extra process, so ``sys.argv``
    is put back whole while the job runs.
    """
    import hydra
    from omegaconf import DictConfig

    from fastst.data.styles import register_resolvers

    register_resolvers()  # ${fastst.run_name:...} in the run directory, resolved before the job starts
    full_argv = list(sys.argv)

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)
    def main(cfg: DictConfig) -> None:
        from fastst.errors import run_command
        from fastst.training.cluster import PREEMPTED_EXIT_CODE

        def job() -> int:
            result = _load(target)(cfg)
            preempted = isinstance(result, dict) and result.get("preempted")
            return PREEMPTED_EXIT_CODE if preempted else 0  # preempted: not finished; the same command resumes

        sys.argv[:] = full_argv
        status = run_command(job, interrupted=interrupted, on_error=_log_to_files)
        if status:
            sys.exit(status)

    def run() -> int:
        sys.argv[:] = [full_argv[0], *full_argv[skip:]]
        try:
            main()
        finally:
            sys.argv[:] = full_argv
        return 0

    return run


def hydra_command(name: str, skip: int = 1) -> Callable[[], int]:
    """:func:`hydra_entry` for the Hydra command ``name`` of :data:`COMMANDS` (``train.py`` and ``optimize.py``)."""
    cmd = COMMANDS[name]
    assert cmd.hydra_config, f"{name} is not a Hydra command"
    return hydra_entry(cmd.hydra_config, cmd.target, skip=skip, interrupted=cmd.interrupted)


def _grouped(width: int) -> list[str]:
    """The command lines of ``--help`` under a heading per stage, in the table's order."""
    stages: dict[str, list[str]] = {}
    for name, cmd in COMMANDS.items():
        stages.setdefault(cmd.stage, []).append(f"    {name:<{width}}  {cmd.help}")
    return [line for stage, lines in stages.items() for line in (f"  {stage}:", *lines)]


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: fastst <command> [args]      (fastst <command> --help for each command's options)",
        "",
        "Fast feed-forward neural style transfer: train, export, stylize, evaluate.",
        "",
        "commands:   (by stage of the data flow; each stage is a subpackage of fastst)",
        *_grouped(width),
        "",
        "example: fastst train style=starry_night data.root=photos/",
        "errors print one 'error: ...' line (exit 2); FASTST_DEBUG=1 shows the traceback",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``fastst``: dispatch to a command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        import fastst

        print(f"fastst {fastst.__version__}")
        return 0
    name, rest = args[0], args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"error: unknown command {name!r}{hint} (fastst --help lists them)", file=sys.stderr)
        return 2
    if cmd.hydra_config:
        if argv is None:
            return hydra_command(name, skip=2)()
        caller_argv = list(sys.argv)  # called from Python: Hydra reads sys.argv, so lend it ours and give it back
        sys.argv[:] = [sys.argv[0], name, *rest]
        try:
            return hydra_command(name, skip=2)()
        finally:
            sys.argv[:] = caller_argv
    return _load(cmd.target)(rest)  # each main has the one error path (fastst.errors.command)


if __name__ == "__main__":
    sys.exit(main())
