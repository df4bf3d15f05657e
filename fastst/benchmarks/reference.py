"""The reference: the textbook fast-style-transfer training loop that fastst's training rows are compared with.

Written the way the PyTorch examples train Johnson et al.'s net (fp32, eager, NCHW, every photo
opened in the main loop, the VGG run with autograd on), with the same transform net, loss layers
and weights as fastst's row, so that the ratio measures fastst's training path and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastst.benchmarks.measure import cpu_counters, foreign_cpu, process_memory, sync
from fastst.benchmarks.training import train_result
from fastst.common.allocator import active as allocator_active
from fastst.common.allocator import keep_freed_memory


def textbook_vgg(network: str, layers: Sequence[str], weights: str, preprocessing: str) -> Any:
    """torchvision's VGG ``features`` (``make_layers``), truncated, returning the named activations.

    A plain ``nn.Sequential`` of torchvision layers (in-place ReLUs, as in torchvision) plus the
    input normalization, the way the PyTorch examples build their loss network.
    """
    import torch
    from torch import nn
    from torchvision.models.vgg import cfgs, make_layers

    from fastst.losses.vgg import CAFFE_MEAN_BGR, TORCHVISION_MEAN, TORCHVISION_STD, layer_names

    names = layer_names(network)
    wanted = {names.index(n): n for n in layers}
    depth = max(wanted) + 1
    features = make_layers(cfgs["D" if network == "vgg16" else "E"])[:depth]
    if weights != "random":
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items()}
        features.load_state_dict({k: v for k, v in state.items() if k in features.state_dict()})
    features.requires_grad_(False).eval()

    class Vgg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            if preprocessing == "caffe":
                mean = [c / 255.0 for c in reversed(CAFFE_MEAN_BGR)]
                self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
                self.register_buffer("std", torch.full((1, 3, 1, 1), 1 / 255.0))
            else:
                self.register_buffer("mean", torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1))
                self.register_buffer("std", torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1))
            self.bgr = preprocessing == "caffe"

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = (x - self.mean) / self.std
            if self.bgr:
                h = h.flip(1)
            out = {}
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in wanted:
                    out[wanted[i]] = h
            return out

    return Vgg()


def run_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The textbook fast-style-transfer training loop (Johnson et al. 2016 as in the PyTorch examples).

    fp32, eager, NCHW; a torchvision ``DataLoader`` with ``num_workers=0`` opens, resizes, crops and
    converts every image in the main loop; the VGG runs on the stylized batch and on the content
    batch with autograd on (``features_x = vgg(x)``; its content layer is the detached target).
    Same transform net, loss layers and weights as fastst's row.
    """
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from fastst.models.johnson import TransformerConfig, TransformerNet

    device = spec["device"]
    if spec.get("keep_freed_memory"):  # the comparison row: the textbook loop with fastst's allocator setting
        keep_freed_memory()
    torch.manual_seed(0)
    loss = spec["loss"]
    size, batch = int(spec["image_size"]), int(spec["batch_size"])

    class Photos(Dataset):
        def __init__(self, files: list[str]) -> None:
            self.files = files
            self.transform = transforms.Compose(
                [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
            )

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.transform(Image.open(self.files[i]).convert("RGB"))

    def gram(f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        f = f.view(b, c, h * w)
        return f.bmm(f.transpose(1, 2)) / (c * h * w)

    content_layers, style_layers = list(loss["content_layers"]), list(loss["style_layers"])
    vgg = textbook_vgg(
        loss["network"], [*content_layers, *style_layers], loss["weights"], loss["preprocessing"] or "torchvision"
    ).to(device)
    net = TransformerNet(TransformerConfig(channels=int(spec["channels"]))).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    mse = nn.MSELoss()
    style_image = Image.open(spec["style"]).convert("RGB")
    if loss.get("style_size"):
        s = loss["style_size"] / max(style_image.size)
        style_image = style_image.resize((round(style_image.width * s), round(style_image.height * s)))
    with torch.no_grad():
        features_s = vgg(transforms.ToTensor()(style_image)[None].to(device))
        gram_s = {layer: gram(features_s[layer]) for layer in style_layers}
    loader = DataLoader(Photos(spec["photos"]), batch_size=batch, shuffle=True, num_workers=0, drop_last=True)

    def batches() -> Iterator[torch.Tensor]:
        while True:
            yield from loader

    cw, sw, tw = float(loss["content_weight"]), float(loss["style_weight"]), float(loss["tv_weight"])
    steps = int(spec["warmup"]) + int(spec["steps"])
    times: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base_rss = process_memory().get("VmRSS")
    sync(device)
    last = time.perf_counter()
    it = batches()
    counters = cpu_counters() if int(spec["warmup"]) == 0 else None
    for step in range(steps):
        x = next(it).to(device)
        optimizer.zero_grad()
        y = net(x)
        features_y = vgg(y)
        features_x = vgg(x)  # autograd on: the textbook computes the targets like any other activation
        content = sum(mse(features_y[k], features_x[k].detach()) for k in content_layers)
        style = sum(mse(gram(features_y[k]), gram_s[k].expand(y.shape[0], -1, -1)) for k in style_layers)
        tv = (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean() + (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()
        total = cw * content + sw * style + tw * tv
        total.backward()
        optimizer.step()
        sync(device)
        now = time.perf_counter()
        times.append(now - last)
        last = now
        if step + 1 == int(spec["warmup"]):
            counters = cpu_counters()
    extra = {"precision": "32-true", "data": "folder (PIL, every step)", "keep_freed_memory": allocator_active()}
    extra["foreign_cpu"] = foreign_cpu(counters, cpu_counters())
    return train_result(spec, times, base_rss, extra)
