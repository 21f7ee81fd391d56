"""MoE-Adapter (Yu et al., CVPR 2024) as its released code runs it: mixture-of-experts adapters in every block of both
CLIP towers (``adapter``, ``gating``, ``block``), the DDAS autoencoders that choose a task's router or zero-shot CLIP
at test time (``ddas``), and the parameter counts (``counts``). The method itself is ``pipeline/methods/moe_adapter.py``;
docs/moe-adapter.md describes both variants (MTIL, CIL) and every choice."""
