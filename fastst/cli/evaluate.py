"""``fastst evaluate`` and ``fastst compare``: a model's losses and SSIM on held-out photos, and the
fast model against pixel optimisation of the same loss (:mod:`fastst.evaluation.images`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fastst.common.options import add_device, add_progress, size_or_none
from fastst.data.styles import STYLE_DIR_ENV
from fastst.errors import command
from fastst.evaluation.compare import compare_with_optimisation
from fastst.evaluation.images import evaluate


def _add_loss_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", choices=("vgg16", "vgg19"), help="loss network (default: the model's)")
    p.add_argument("--loss-weights", help="loss network weights: imagenet, random or a file (default: the model's)")
    p.add_argument(
        "--preprocessing", choices=("torchvision", "caffe"), help="loss input convention (default: the model's)"
    )
    add_device(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst compare",
        description="Fast model vs. pixel optimisation of the same loss: grids (content | fast | optimisation) "
        "and a table of wall times and losses (Johnson et al. 2016, Table 1).",
    )
    p.add_argument("model", help="exported .safetensors model")
    p.add_argument("content", nargs="+", help="content images")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="long sides (px)")
    p.add_argument("--iterations", type=int, nargs="+", default=[100], help="optimisation iterations, one or per size")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--init", choices=("content", "noise", "style"), default="content")
    p.add_argument(
        "--clamp", choices=("step", "end"), default="step", help="clamp pixels after every step or at the end"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the fast model (median; 1 warm-up first)")
    p.add_argument("--opt-repeats", type=int, default=1, help="timed runs of the optimisation (median)")
    p.add_argument("--style", help="style image or shipped style name (default: the model's own style)")
    p.add_argument(
        "--style-dir", help=f"where the model's style image is looked up (default: ${STYLE_DIR_ENV} or styles)"
    )
    add_progress(p, default="none")  # a bar per optimisation
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_loss_args(p)
    return p


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst evaluate",
        description="Content loss, style loss and SSIM to the content of a fast model over a folder of photos.",
    )
    p.add_argument("model", help="exported .safetensors model")
    p.add_argument("--content", required=True, help="folder of held-out photos (searched recursively)")
    p.add_argument(
        "--style",
        help="style image or shipped style name (default: the model's own style); a multi-style model: "
        "the name of its style to evaluate (required when it has several)",
    )
    p.add_argument(
        "--style-dir", help=f"where the model's style image is looked up (default: ${STYLE_DIR_ENV} or styles)"
    )
    p.add_argument(
        "--style-images",
        metavar="DIR",
        help="an arbitrary-style model: a folder of paintings; one row per painting (style and content loss of "
        "fastst's default criterion, SSIM), their mean, and a grid PNG (paintings x photos) next to -o",
    )
    p.add_argument("--size", type=int, default=256, help="long side (px); 0 keeps the photo's size")
    p.add_argument("--limit", type=int, default=0, help="use the first K photos (sorted); 0 = all")
    p.add_argument("--painting-limit", type=int, default=0, help="with --style-images: the first K paintings; 0 = all")
    p.add_argument("-o", "--output", required=True, help="JSON file (a .md with the table is written next to it)")
    _add_loss_args(p)
    return p


def _run(parser: argparse.ArgumentParser, func: Any, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    if hasattr(args, "size"):
        args.size = size_or_none(args.size)
    func(args)
    return 0


@command()
def compare_main(argv: Sequence[str] | None = None) -> int:
    """``fastst compare``."""
    return _run(compare_parser(), compare_with_optimisation, argv)


@command()
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``fastst evaluate``."""
    return _run(evaluate_parser(), _evaluate, argv)


def _evaluate(args: argparse.Namespace) -> Any:
    """One painting style (the model's), or an arbitrary-style model over a folder of paintings."""
    if args.style_images:
        from fastst.evaluation.arbitrary import evaluate_paintings

        return evaluate_paintings(args)
    from fastst.inference.paintings import is_arbitrary
    from fastst.modelfile.weights import read_metadata

    if str(args.model).endswith(".safetensors") and is_arbitrary(read_metadata(args.model)):
        from fastst.errors import UsageError

        raise UsageError(f"{args.model} takes any painting: pass --style-images DIR (a folder of paintings)")
    return evaluate(args)
