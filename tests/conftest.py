"""Session-wide test setup.

The parity fixtures' mixed-precision outputs come from oneDNN's AVX512-BF16 GEMM kernels. On a CPU with AMX,
oneDNN picks its AMX kernels instead, which sum bf16 products in another order and move a layer's output by
~0.2-0.3%: no longer the official numbers. oneDNN reads this cap at its first GEMM, so it is set before any test
runs; a cap set by the caller wins. It changes nothing in fp32 (AMX only serves bf16/int8).
"""

import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
