// Variables, recording, and the backward engine: a topological order over the graph
// (iterative DFS), gradients accumulated per variable, each node released once used.
#include "autograd/variable.h"

#include <unordered_set>

#include "core/ops.h"

namespace lopper {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Variable::Variable(Tensor data, bool requires_grad) : impl_(std::make_shared<VariableImpl>()) {
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
}

Variable make_result(Tensor y, std::vector<Variable> inputs, const char* name, BackwardFn backward) {
  Variable out(std::move(y), false);
  if (!g_grad_enabled) return out;
  bool any = false;
  for (const Variable& v : inputs) any = any || v.requires_grad();
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const Variable& v : inputs) node->inputs.push_back(v.impl());
  node->backward = std::move(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
  return out;
}

void Variable::backward(const Tensor& grad) const {
  LOPPER_CHECK(defined() && requires_grad(), "[backward] variable does not require grad");
  Tensor root = grad;
  if (!root.defined()) {
    LOPPER_CHECK(numel() == 1, "[backward] implicit gradient needs a one-element output, got ",
                 shape_str(shape()));
    root = Tensor::ones(shape(), dtype(), device());
  }
  LOPPER_CHECK(root.shape() == shape(), "[backward] gradient ", shape_str(root.shape()), " for output ",
               shape_str(shape()));

  // Post-order DFS; reversed, every variable comes after all that consume it. The order
  // holds owning pointers: releasing a node may drop the last other reference to an input.
  std::vector<std::shared_ptr<VariableImpl>> order;
  std::unordered_set<VariableImpl*> seen;
  std::vector<std::pair<std::shared_ptr<VariableImpl>, size_t>> stack{{impl_, 0}};
  seen.insert(impl_.get());
  while (!stack.empty()) {
    auto& [v, next] = stack.back();
    if (v->grad_fn && next < v->grad_fn->inputs.size()) {
      const std::shared_ptr<VariableImpl>& in = v->grad_fn->inputs[next++];
      if (in->requires_grad && seen.insert(in.get()).second) stack.push_back({in, 0});
    } else {
      order.push_back(std::move(v));
      stack.pop_back();
    }
  }

  auto accumulate = [](VariableImpl* v, const Tensor& g) {
    if (v->grad_fn) {  // interior: may alias, never written in place
      v->grad = v->grad.defined() ? add(v->grad, g) : g;
    } else if (!v->grad.defined()) {  // leaf: owns its gradient (optimizers write into it)
      v->grad = g.clone();
    } else {
      add_(v->grad, g);
    }
  };

  accumulate(impl_.get(), root);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    VariableImpl* v = it->get();
    if (!v->grad_fn) continue;
    std::shared_ptr<Node> node = std::move(v->grad_fn);
    Tensor gy = std::move(v->grad);
    v->grad = Tensor();
    if (!gy.defined()) continue;
    std::vector<Tensor> grads = node->backward(gy);
    LOPPER_CHECK(grads.size() == node->inputs.size(), "[backward] ", node->name, " returned ", grads.size(),
                 " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      VariableImpl* in = node->inputs[i].get();
      if (!in->requires_grad || !grads[i].defined()) continue;
      LOPPER_CHECK(grads[i].shape() == in->data.shape(), "[backward] ", node->name, " gave gradient ",
                   shape_str(grads[i].shape()), " for input ", i, " of shape ", shape_str(in->data.shape()));
      accumulate(in, grads[i]);
    }
  }
}

}  // namespace lopper
