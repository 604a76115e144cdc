"""Where the code runs: which process of a distributed launch, on a GPU or a CPU, with bf16.

Lightning starts ranks 1..N-1 of a DDP training by running the same command again with
``LOCAL_RANK`` set (``srun`` and ``torchrun`` start every rank themselves). Those processes go
through the same code as rank 0, so that they reach the same ``Trainer.fit``, but only rank 0
writes: run records, stage records, checkpoints, predictions, reports. Lightning reads the
rank from the environment at import; :func:`is_rank_zero` only asks it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["cpu_has_bf16", "cuda_bf16", "is_rank_zero", "on_gpu"]


def is_rank_zero() -> bool:
    """True in a plain process, and in rank 0 of a distributed one."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def on_gpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting trains on a CUDA GPU here."""
    if accelerator in ("gpu", "cuda"):
        return True
    import torch

    return accelerator == "auto" and torch.cuda.is_available()


def cuda_bf16() -> bool:
    """Whether a CUDA GPU with bf16 arithmetic is here."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX); elsewhere PyTorch emulates
    it, about 30 times slower than float32 (benchmarks/penet_speed.py)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})
