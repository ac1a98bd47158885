// The CUDA backend of a CPU-only build: every entry point throws a clear error, and
// available() is false so tests skip.
#include "core/backend.h"

namespace lopper::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  LOPPER_FAIL("[cuda] ", what, ": this build of Lopper has no CUDA backend (configure with -DLOPPER_CUDA=ON)");
}
}  // namespace

bool built() { return false; }
bool available() { return false; }
int device_count() { return 0; }
void synchronize() {}
void set_tf32(bool) {}
Allocator& device_allocator(int) { no_cuda("allocate"); }
void copy_between_devices(const Tensor&, const Tensor&) { no_cuda("copy"); }

void unary(kernels::UnaryOp, kernels::UnaryParams, const Tensor&, const Tensor&) { no_cuda("unary"); }
void unary_backward(kernels::UnaryOp, kernels::UnaryParams, const Tensor&, const Tensor&, const Tensor&) { no_cuda("unary_backward"); }
void binary(kernels::BinaryOp, const Tensor&, const Tensor&, const Tensor&) { no_cuda("binary"); }
void bias_act(kernels::UnaryOp, const Tensor&, const Tensor&) { no_cuda("bias_act"); }
void binary_backward(kernels::BinaryOp, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("binary_backward"); }
void compare(kernels::CompareOp, const Tensor&, const Tensor&, const Tensor&) { no_cuda("compare"); }
void where(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("where"); }
void copy(const Tensor&, const Tensor&) { no_cuda("copy"); }
void fill(const Tensor&, double) { no_cuda("fill"); }
void random(kernels::RandomKind, double, double, uint64_t, uint64_t, const Tensor&) { no_cuda("random"); }
void dropout(const Tensor&, const Tensor&, float, uint64_t, uint64_t) { no_cuda("dropout"); }
void reduce(kernels::ReduceOp, const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) { no_cuda("reduce"); }
void softmax(const Tensor&, const Tensor&, bool) { no_cuda("softmax"); }
void softmax_backward(const Tensor&, const Tensor&, const Tensor&, bool) { no_cuda("softmax_backward"); }
void layer_norm(const Tensor&, const Tensor&, const Tensor&, double, const Tensor&, const Tensor&, const Tensor&) { no_cuda("layer_norm"); }
void layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("layer_norm_backward"); }
void topk(const Tensor&, int64_t, bool, const Tensor&, const Tensor&) { no_cuda("topk"); }
void topk_mask(const Tensor&, const Tensor&, const Tensor&) { no_cuda("topk_mask"); }
void index_select(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) { no_cuda("index_select"); }
void index_add(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) { no_cuda("index_add"); }
void gather(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) { no_cuda("gather"); }
void scatter_add(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) { no_cuda("scatter_add"); }
void gemm(const kernels::GemmArgs&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("gemm"); }
void adamw(const kernels::AdamWStep&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("adamw"); }

}  // namespace lopper::cuda
