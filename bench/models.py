"""Benchmark workloads: ResNet-50 and MobileNetV2 (torchvision architectures, random weights) and a
BERT-base encoder (12 layers, hidden 768, 12 heads, intermediate 3072, GELU, LayerNorm, attention mask)."""
from __future__ import annotations

import math

import torch
from torch import nn


class BertLayer(nn.Module):
    def __init__(self, hidden=768, heads=12, intermediate=3072):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attention_out, self.norm1 = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.up, self.down, self.norm2 = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden), \
            nn.LayerNorm(hidden, eps=1e-12)

    def _split(self, x):
        batch, sequence, _ = x.shape
        return x.reshape(batch, sequence, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask_bias):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(x.shape)
        x = self.norm1(x + self.attention_out(context))
        return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))


class BertEncoder(nn.Module):
    """BERT-base without the embedding lookup: input hidden states [B, S, 768] and a 0/1 mask [B, S]."""

    def __init__(self, layers=12):
        super().__init__()
        self.layers = nn.ModuleList(BertLayer() for _ in range(layers))

    def forward(self, hidden, mask):
        mask_bias = (1.0 - mask[:, None, None, :]) * -10000.0
        for layer in self.layers:
            hidden = layer(hidden, mask_bias)
        return hidden


def make_model(name: str) -> nn.Module:
    if name == "bert_base":
        return BertEncoder()
    import torchvision

    return {"resnet50": torchvision.models.resnet50, "mobilenet_v2": torchvision.models.mobilenet_v2}[name]()


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Random running statistics, so that folded BatchNorm is tested with non-trivial values."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def make_inputs(name: str, batch: int, device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if name == "bert_base":
        mask = torch.ones(batch, 128)
        mask[:, 100:] = 0  # padded tail, so the mask matters
        return {"hidden": torch.randn(batch, 128, 768, generator=generator).to(device), "mask": mask.to(device)}
    return {"image": torch.randn(batch, 3, 224, 224, generator=generator).to(device)}
