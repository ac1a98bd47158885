// Module bookkeeping: recursive names, state dicts, modes.
#include "nn/module.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace lopper::nn {

std::string LoadReport::str() const {
  std::ostringstream os;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << what << " (" << v.size() << "): ";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    os << ". ";
  };
  list("Missing keys", missing);
  list("Unexpected keys", unexpected);
  return os.str();
}

Variable Module::register_parameter(const std::string& name, Tensor init, bool requires_grad) {
  for (auto& [n, v] : params_) LOPPER_CHECK(n != name, "[module] parameter '", name, "' registered twice");
  Variable v(std::move(init), requires_grad);
  params_.emplace_back(name, v);
  return v;
}

void Module::reset_parameter(const std::string& name, Tensor t) {
  for (auto& [n, v] : params_)
    if (n == name) {
      v.mutable_data() = std::move(t);
      v.zero_grad();
      return;
    }
  LOPPER_FAIL("[module] no parameter '", name, "'");
}

void Module::register_buffer(const std::string& name, Tensor t) { buffers_.emplace_back(name, std::move(t)); }

void Module::collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Variable>>& out) const {
  for (auto& [n, v] : params_) out.emplace_back(prefix + n, v);
  for (auto& [n, c] : children_) c->collect_parameters(prefix + n + ".", out);
}

void Module::collect_buffers(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (auto& [n, c] : children_) c->collect_buffers(prefix + n + ".", out);
}

void Module::collect_modules(const std::string& name, std::vector<std::pair<std::string, Module*>>& out) {
  out.emplace_back(name, this);
  for (auto& [n, c] : children_) c->collect_modules(name.empty() ? n : name + "." + n, out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  collect_modules("", out);
  return out;
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Variable>> out;
  collect_parameters("", out);
  return out;
}

std::vector<Variable> Module::parameters() const {
  std::vector<Variable> out;
  for (auto& [n, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect_buffers("", out);
  return out;
}

Variable Module::parameter(const std::string& name) const {
  for (auto& [n, v] : named_parameters())
    if (n == name) return v;
  LOPPER_FAIL("[module] no parameter named '", name, "'");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, v] : named_parameters()) n += v.numel();
  return n;
}

StateDict Module::state_dict() const {
  StateDict sd;
  for (auto& [n, v] : named_parameters()) sd[n] = v.data();
  for (auto& [n, t] : named_buffers()) sd[n] = t;
  return sd;
}

void check_finite(const StateDict& sd, const std::string& what) {
  for (auto& [name, t] : sd) {
    if (!is_floating(t.dtype())) continue;
    std::vector<float> v = t.to(Device::cpu()).to(DType::f32).to_vector<float>();
    int64_t nan = 0, inf = 0;
    for (float x : v) {
      nan += std::isnan(x);
      inf += std::isinf(x);
    }
    LOPPER_CHECK(nan + inf == 0, what, ": weight '", name, "' holds ", nan, " NaN and ", inf, " infinite values of ",
                 v.size(), " (a diverged or damaged checkpoint; nothing was trained)");
  }
}

LoadReport Module::load_state_dict(const StateDict& sd, bool strict) {
  LoadReport rep;
  std::set<std::string> used;
  auto load_into = [&](const std::string& name, Tensor& dst) {
    auto it = sd.find(name);
    if (it == sd.end()) {
      rep.missing.push_back(name);
      return;
    }
    LOPPER_CHECK(it->second.shape() == dst.shape(), "[load_state_dict] size mismatch for ", name,
                 ": checkpoint has ", shape_str(it->second.shape()), ", model has ", shape_str(dst.shape()));
    dst.copy_(it->second);
    used.insert(name);
  };
  for (auto& [n, v] : named_parameters()) load_into(n, v.mutable_data());
  for (auto& [n, t] : named_buffers()) {
    Tensor tt = t;
    load_into(n, tt);
  }
  for (auto& [n, t] : sd)
    if (!used.count(n)) rep.unexpected.push_back(n);
  if (strict) LOPPER_CHECK(rep.missing.empty() && rep.unexpected.empty(), "[load_state_dict] ", rep.str());
  return rep;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::set_requires_grad(bool r) {
  for (auto& [n, v] : named_parameters()) v.set_requires_grad(r);
}

void Module::zero_grad() {
  for (auto& [n, v] : named_parameters()) v.zero_grad();
}

void Module::to(Device d) {
  for (auto& [n, v] : params_) v.mutable_data() = v.data().to(d);
  for (auto& [n, t] : buffers_) t = t.to(d);
  for (auto& [n, c] : children_) c->to(d);
}

}  // namespace lopper::nn
