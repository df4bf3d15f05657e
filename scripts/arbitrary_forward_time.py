"""Forward time of the arbitrary-style nets at one photo size (CPU, torch): the reference AdaIN net
and fast-variant candidates, fp32 and bf16. Prints a Markdown table (docs/arbitrary_training.md).

    flock /tmp/fastst-heavy.lock nice -n 19 python scripts/arbitrary_forward_time.py --size 1024

Times ``net(photo, code)`` only: the style code is computed once per painting (``style_code``).
"""

from __future__ import annotations

import argparse
import time

import torch

from fastst.models.arbitrary import ArbitraryConfig, ArbitraryNet

VARIANTS = {
    "reference (VGG encoder, decoder 1.0)": dict(),
    "student 32, decoder 0.5": dict(content_encoder="student", student_width=32, decoder_width=0.5),
    "student 32, decoder 0.25": dict(content_encoder="student", student_width=32, decoder_width=0.25),
    "student 16, decoder 0.25": dict(content_encoder="student", student_width=16, decoder_width=0.25),
    "student 16, light decoder 0.25": dict(
        content_encoder="student", student_width=16, decoder="light", decoder_width=0.25
    ),
    "student 16, light decoder 0.5": dict(
        content_encoder="student", student_width=16, decoder="light", decoder_width=0.5
    ),
    "student 32, light decoder 0.5": dict(
        content_encoder="student", student_width=32, decoder="light", decoder_width=0.5
    ),
}


def gmacs(net: ArbitraryNet, size: int) -> float:
    """Multiply-accumulates of the convolutions of one forward pass at size x size, in billions."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.rand(1, 3, size, size), torch.rand(1, net.code_dim))
    for h in handles:
        h.remove()
    return total / 1e9


def time_forward(net: ArbitraryNet, size: int, dtype: torch.dtype, repeats: int) -> float:
    x, code = torch.rand(1, 3, size, size), torch.rand(1, net.code_dim)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        net(x, code)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x, code)
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--only", default=None, help="substring of the variants to time")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}x{args.size} px, "
        f"best of {args.repeats}"
    )
    print("| net | parameters (trained) | GMAC | fp32 s | bf16 s |")
    print("|---|---|---|---|---|")
    for name, kw in VARIANTS.items():
        if args.only and args.only not in name:
            continue
        net = ArbitraryNet(ArbitraryConfig(**kw)).eval()
        params = sum(p.numel() for p in net.trainable_parameters())
        fp32 = time_forward(net, args.size, torch.float32, args.repeats)
        bf16 = f"{time_forward(net, args.size, torch.bfloat16, args.repeats):.3f}" if args.bf16 else "-"
        print(f"| {name} | {params:,} | {gmacs(net, args.size):.1f} | {fp32:.3f} | {bf16} |", flush=True)


if __name__ == "__main__":
    main()
