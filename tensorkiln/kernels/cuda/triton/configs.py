"""Tile configurations of the Triton kernels (frozen dataclasses) and the candidates the tactic timer tries.

This module imports no triton, so kernels/cuda/triton_tactics.py can name every tactic without importing it. A
config's `name` goes into the tactic id (`cuda.<kind>.triton_<family>_<name>`), so renaming one invalidates timing
caches and engines that chose it. Few candidates per kind: each is a separate compile for every distinct shape.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    """Tiles of a GEMM (also the implicit-GEMM convolution: M = output pixels, N = output channels)."""
    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8  # row blocks that sweep the columns together (L2 reuse of B)
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1  # programs that share an output tile, each reducing a slice of K; 0: chosen per shape (gemm.py)

    @property
    def name(self) -> str:
        name = f"bm{self.block_m}_bn{self.block_n}_bk{self.block_k}_w{self.num_warps}_s{self.num_stages}"
        return name if self.split_k == 1 else f"{name}_k{self.split_k or 'auto'}"


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """Tiles of the direct NHWC kernels (depthwise convolution, pooling): output pixels x channels."""
    block_pix: int = 32
    block_c: int = 64
    num_warps: int = 4

    @property
    def name(self) -> str:
        return f"bp{self.block_pix}_bc{self.block_c}_w{self.num_warps}"


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    block_m: int = 64  # query rows per program
    block_n: int = 64  # keys per step of the online softmax
    num_warps: int = 4
    num_stages: int = 2

    @property
    def name(self) -> str:
        return f"bm{self.block_m}_bn{self.block_n}_w{self.num_warps}_s{self.num_stages}"


@dataclasses.dataclass(frozen=True)
class RowConfig:
    """Row kernels (softmax, norms): block 0 sizes the block from the row length; num_warps 0 from the block;
    rows > 1 (the norms): that many whole rows per program, for short rows (norms.py)."""
    block_n: int = 0
    num_warps: int = 0
    rows: int = 1

    @property
    def name(self) -> str:
        name = f"bn{self.block_n}_w{self.num_warps}" if self.block_n else \
            "auto" + (f"_w{self.num_warps}" if self.num_warps else "")
        return name if self.rows == 1 else f"r{self.rows}_{name}"


@dataclasses.dataclass(frozen=True)
class ElementwiseConfig:
    block: int = 1024
    num_warps: int = 4

    @property
    def name(self) -> str:
        return f"b{self.block}_w{self.num_warps}"


@dataclasses.dataclass(frozen=True)
class TmaGemmConfig:
    """The persistent TMA GEMM (gemm_tma.py): its tiles, and how its loop and epilogue run."""
    tiles: GemmConfig = GemmConfig(128, 128, 64, 8, 8, 3)
    warp_specialize: bool = False  # producer warps issue the loads, consumer warps the MMAs (Triton's tl.range)
    split_epilogue: bool = False  # the epilogue in two column halves: half the registers live at a time
    programs_per_sm: int = 1  # 2: one program's epilogue overlaps another's loads (memory-bound GEMMs)
    tma_store: bool = False  # the INT8 GEMM (int8_gemm_tma.py): store the tile through shared memory and TMA

    @property
    def name(self) -> str:
        return (f"tma_{self.tiles.name}" + ("_ws" if self.warp_specialize else "")
                + ("_split" if self.split_epilogue else "") + (f"_p{self.programs_per_sm}"
                                                                 if self.programs_per_sm != 1 else "")
                + ("_tmastore" if self.tma_store else ""))


# the persistent TMA GEMM's tactic: 128x256 tiles with the split epilogue were the best, or within 3% of it, on
# every large shape of bench/gemm_variants.py on an H200 (BERT-base b128's projections, ResNet-50 b256's 1x1
# convolutions). One config: each is a compile per epilogue variant
TMA_GEMM_CONFIGS = (TmaGemmConfig(GemmConfig(128, 256, 64, 8, 8, 3), split_epilogue=True),)
GEMM_CONFIGS = (GemmConfig(128, 128, 32, 8, 4, 4), GemmConfig(128, 64, 64, 8, 4, 3), GemmConfig(64, 64, 32, 8, 4, 4))
# the first config is the one opt level 2 tries: 128x64 won most large-batch ResNet-50 and MobileNetV2 layers on an H100
CONV_CONFIGS = (GemmConfig(128, 64, 32, 8, 4, 4), GemmConfig(128, 128, 32, 8, 8, 3), GemmConfig(64, 64, 32, 8, 4, 4))
# split-K: for layers whose output is too small to fill the GPU (batch 1); the tactic timer decides whether it pays.
# One config, its split chosen per shape (split_k_for): every config is a compile per epilogue variant. 16x64 tiles
# with 128-deep K steps, of the 72 configs of bench/splitk_variants.py on ResNet-50's batch-1 layers (H200), were
# the best or within 2% of it on layer3's and layer4's 3x3 convolutions and the classifier: 9.5 us for layer4's
# 3x3 (64x64x64 tiles 10.9 us, cuDNN 12.4 us), 6.8 us for the classifier (8.4 us, cuBLASLt 12.1 us)
SPLIT_K_CONFIGS = (GemmConfig(16, 64, 128, 8, 4, 3, split_k=0),)
SPLIT_K_TILES = 16  # output tiles below which a problem is split 8 ways rather than 4 (~128 programs on ~132 SMs)


def split_k_for(config: GemmConfig, tiles: int) -> int:
    """The config's split of K for a problem of `tiles` output tiles (split_k 0: chosen from the tile count)."""
    return config.split_k or (8 if tiles < SPLIT_K_TILES else 4)


DEPTHWISE_CONFIGS = (TileConfig(64, 32, 4), TileConfig(32, 64, 4))
POOL_CONFIGS = (TileConfig(32, 64, 4),)
GLOBAL_POOL_CONFIGS = (TileConfig(32, 64, 4),)  # block_pix: spatial positions per step
# 64x32 came closest to PyTorch's SDPA on BERT-base b128's masked attention (54 against 47.5 us, H200)
ATTENTION_CONFIGS = (AttentionConfig(128, 64, 8, 3), AttentionConfig(64, 64, 4, 3), AttentionConfig(64, 32, 4, 3))
ROW_CONFIGS = (RowConfig(),)
# the norms also tile short rows: BERT-base b128's 768-wide LayerNorm took 27 us in one-row programs on an H200,
# 20.8 us four rows at a time, 17.5 us two rows to a 2-warp program (92% of the copy rate; bench/norm_variants.py)
NORM_CONFIGS = (RowConfig(), RowConfig(rows=2, num_warps=2), RowConfig(rows=4), RowConfig(rows=16))
MAX_TILED_ROW = 4096  # the longest row the norms' `rows` kernels hold in one tile with others
POINTWISE_CONFIGS = (ElementwiseConfig(1024, 4),)
