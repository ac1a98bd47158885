// A dense weight packed once for inference on the CPU: (out, in) cut into panels of 16
// outputs, each stored K-major (for every input feature, the panel's 16 weights side by
// side), the layout Lopper's AVX2 register tile (core/cpu/gemm_tile.h) streams; then
// y = x · wᵀ + b and an activation per tile while it is in cache. dnnl_sgemm packs its
// weight again on every call; this packs it once (as ONNX Runtime's MLAS does at load). On
// an AVX2-only Zen 3 that saved 1-4% of the GEMM time in a quiet hour but lost about 10%
// while other VMs loaded the machine, so nn::BlockSparseScope uses it only when asked
// (docs/benchmarks.md). Not differentiable: the scope packs a finished weight for
// evaluation and benchmarks. Never for CPUs with AVX-512, where oneDNN's kernels are twice
// as wide (panel_linear_preferred).
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "core/kernels/elementwise.h"
#include "core/tensor.h"

namespace lopper {

struct PanelMatrix {
  static constexpr int64_t kWidth = 16;  // outputs per panel: the tile's two AVX2 vectors
  int64_t rows = 0, cols = 0;            // the dense shape (out, in)
  std::vector<float> values;             // (ceil(rows / 16), cols, 16); the last panel zero-padded
};

// Whether this build has the AVX2 tile (x86-64-v3 or native builds); panel_linear throws
// without it.
bool panel_linear_built();
// Whether to use it: built, and the CPU running it has no AVX-512 (checked once, at run time).
bool panel_linear_preferred();

// w (out, in) f32 on the CPU.
PanelMatrix to_panels(const Tensor& w);

// x (..., cols) -> (..., rows): x · wᵀ + bias, bias (rows) or undefined; then act (a unary op
// without scalars) if given. Every output is one FMA chain over the inputs in order, so the
// result does not depend on the thread count. f32 on the CPU.
Tensor panel_linear(const Tensor& x, const PanelMatrix& w, const Tensor& bias,
                    std::optional<kernels::UnaryOp> act = std::nullopt);

}  // namespace lopper
