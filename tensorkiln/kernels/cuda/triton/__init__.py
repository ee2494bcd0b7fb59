"""Triton kernels of the CUDA target, written as real GPU kernels (tiles, tl.dot with FP32 accumulation, masks for
ragged edges, constexpr block sizes) in the style of Triton's tutorials: arguments commented, `*_ptr` and
`stride_<tensor><dim>` names, a host wrapper per kernel that allocates the output and computes the grid.

Importing any module of this package imports triton; `kernels/cuda/triton_tactics.py` imports them lazily, so
`import tensorkiln` never needs triton. The kernels also run in Triton's CPU interpreter (TRITON_INTERPRET=1, set
before these modules are imported) on CPU tensors, which is how tests/gpu/test_triton_kernels.py checks them on
machines without a GPU.
"""
