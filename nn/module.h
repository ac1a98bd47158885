// Module: named parameters, buffers and children, registered under the names Hugging Face
// uses, so state dicts load by name and pruning masks are keyed by name. Not a forward
// interface: each module declares the forward its arguments need.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"

namespace lopper::nn {

using StateDict = std::map<std::string, Tensor>;

// Throws, naming the first tensor that holds a NaN or an infinity and how many values it
// has, with what (e.g. "model.path '/models/x'") in front; integer tensors are skipped.
void check_finite(const StateDict& sd, const std::string& what);

struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the state dict
  std::vector<std::string> unexpected;  // in the state dict, not in the module
  std::vector<std::string> resized;     // a task head for another label count, dropped (also in missing)
  std::string str() const;              // transformers-style summary
};

class Module {
 public:
  virtual ~Module() = default;

  std::vector<std::pair<std::string, Variable>> named_parameters() const;
  // This module ("") and every module below it by dotted Hugging Face name, parents first
  // ("bert.encoder.layer.0.attention.self.query"); of_type keeps those of one class.
  std::vector<std::pair<std::string, Module*>> named_modules();
  template <class M>
  std::vector<std::pair<std::string, M*>> named_modules_of_type() {
    std::vector<std::pair<std::string, M*>> out;
    for (auto& [n, m] : named_modules())
      if (auto* t = dynamic_cast<M*>(m)) out.emplace_back(n, t);
    return out;
  }
  std::vector<Variable> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  Variable parameter(const std::string& name) const;  // by full dotted name; throws if absent
  int64_t num_parameters() const;

  StateDict state_dict() const;
  // Copies tensors in by name (casting dtype). Shape mismatches throw with both shapes;
  // with strict, missing or unexpected keys throw as well. Returns what did not match.
  LoadReport load_state_dict(const StateDict& sd, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void set_requires_grad(bool r);  // freeze (false) or unfreeze every parameter
  void zero_grad();
  void to(Device d);

 protected:
  Variable register_parameter(const std::string& name, Tensor init, bool requires_grad = true);
  void register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  // Replaces a registered parameter's tensor (compaction changes shapes).
  void reset_parameter(const std::string& name, Tensor t);

 private:
  void collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Variable>>& out) const;
  void collect_buffers(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;
  void collect_modules(const std::string& name, std::vector<std::pair<std::string, Module*>>& out);

  std::vector<std::pair<std::string, Variable>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// Children named "0", "1", ... as torch.nn.ModuleList does.
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_.at(i); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace lopper::nn
