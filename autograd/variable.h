// Variable: a tensor that may take part in differentiation (data, grad, the node that made
// it). The graph hangs off results through their grad_fn and is freed by backward().
// Not an op library: the differentiable functions live in autograd/functions.h.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lopper {

struct Node;

struct VariableImpl {
  Tensor data;
  Tensor grad;                    // accumulated gradient (leaves keep it after backward)
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
};

// One recorded op: its inputs and a closure holding exactly what its backward needs.
// backward(gy) returns one gradient per input (undefined where none is needed).
struct Node {
  const char* name = "";
  std::vector<std::shared_ptr<VariableImpl>> inputs;
  std::function<std::vector<Tensor>(const Tensor& gy)> backward;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const { return impl_->data; }
  Tensor& mutable_data() const { return impl_->data; }  // optimizers update in place
  const Tensor& grad() const { return impl_->grad; }
  void set_grad(Tensor g) const { impl_->grad = std::move(g); }
  void zero_grad() const { impl_->grad = Tensor(); }
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  void set_requires_grad(bool r) const { impl_->requires_grad = r; }
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

  const Shape& shape() const { return data().shape(); }
  int64_t dim() const { return data().dim(); }
  int64_t size(int64_t d) const { return data().size(d); }
  int64_t numel() const { return data().numel(); }
  DType dtype() const { return data().dtype(); }
  Device device() const { return data().device(); }

  // Backpropagates from this variable. `grad` defaults to 1 for a one-element variable.
  // Leaves accumulate into grad(); the graph behind this variable is freed.
  void backward(const Tensor& grad = Tensor()) const;
  // Same data, no history.
  Variable detach() const { return Variable(data(), false); }

 private:
  std::shared_ptr<VariableImpl> impl_;
};

// Gradient recording is on unless a NoGradGuard is alive on this thread.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& gy)>;

// Wraps an op's result: records a Node when recording is on and any input requires grad.
Variable make_result(Tensor y, std::vector<Variable> inputs, const char* name, BackwardFn backward);

}  // namespace lopper
