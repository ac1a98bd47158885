// Hard-Concrete head (and FFN-neuron) gates behind the PruningMethod interface.
#include "pruning/l0_gates.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/ops.h"

namespace lopper::pruning {

using json = nlohmann::json;

L0Gates::L0Gates(const nn::BertConfig& c, const L0GateOptions& o)
    : o_(o), gates_(std::make_shared<BertGates>(c, o.ffn_gates, HardConcreteParams{o.temperature}, o.gate_init)) {}

nn::NamedParams L0Gates::parameters() {
  nn::NamedParams p;
  for (auto& [n, v] : gates_->named_parameters()) p.emplace_back(name() + "." + n, v);
  return p;
}

void L0Gates::attach(nn::BertModel& model, Generator* gen) {
  gates_->train(gen != nullptr);
  gates_->attach(model, gen);
}

Variable L0Gates::penalty(int64_t step, int64_t total) {
  Variable e = gates_->expected_heads();  // ()
  expected_heads_ = e.data().item<double>();
  Variable p;
  if (o_.target_heads > 0) {
    // The target falls linearly from all heads to target_heads over the warm-up.
    double n = static_cast<double>(gates_->num_heads()), warm = o_.target_warmup_ratio * static_cast<double>(total);
    double f = warm > 0 ? std::min(1.0, static_cast<double>(step) / warm) : 1.0;
    double target = n + (static_cast<double>(o_.target_heads) - n) * f;
    p = lagrangian_.penalty(ag::scale(e, 1.0 / n), target / n);
  } else {
    p = ag::scale(e, o_.l0_penalty);
  }
  if (gates_->has_ffn()) {
    Variable n = gates_->expected_neurons();  // ()
    expected_neurons_ = n.data().item<double>();
    p = ag::add(p, ag::scale(n, o_.ffn_l0_penalty));
  }
  return p;
}

void L0Gates::after_step(int64_t, int64_t) {
  if (o_.target_heads > 0) lagrangian_.ascend(o_.lagrangian_lr);
}

nn::StateDict L0Gates::state_dict() const {
  nn::StateDict sd = gates_->state_dict();
  sd["lagrangian.lambda_1"] = Tensor::full({}, lagrangian_.lambda_1());
  sd["lagrangian.lambda_2"] = Tensor::full({}, lagrangian_.lambda_2());
  return sd;
}

void L0Gates::load_state_dict(const nn::StateDict& sd) {
  nn::StateDict gates = sd;
  auto take = [&](const std::string& k) {
    auto it = gates.find(k);
    LOPPER_CHECK(it != gates.end(), "[head_gates] state has no '", k, "'");
    double v = it->second.item<double>();
    gates.erase(it);
    return v;
  };
  double l1 = take("lagrangian.lambda_1"), l2 = take("lagrangian.lambda_2");
  lagrangian_.set(l1, l2);
  gates_->load_state_dict(gates);
}

std::vector<int64_t> L0Gates::open_neurons() const {
  std::vector<int64_t> open;
  for (auto& layer : gates_->neuron_values())
    open.push_back(std::count_if(layer.begin(), layer.end(), [](double v) { return v >= 0.5; }));
  return open;
}

void L0Gates::report(json& j) const {
  j["expected_heads"] = expected_heads_;
  json g = json::array();
  for (auto& layer : gates_->head_values()) {
    json row = json::array();
    for (double v : layer) row.push_back(std::round(v * 1000) / 1000);
    g.push_back(row);
  }
  j["gates"] = g;
  if (o_.target_heads > 0) j["lambda"] = {lagrangian_.lambda_1(), lagrangian_.lambda_2()};
  if (gates_->has_ffn()) {
    j["expected_neurons"] = expected_neurons_;
    j["ffn_open"] = open_neurons();
  }
}

std::string L0Gates::status() const {
  std::string s = "heads " + std::to_string(expected_heads_).substr(0, 5);
  if (gates_->has_ffn()) s += " ffn " + std::to_string(std::lround(expected_neurons_));
  return s;
}

std::string L0Gates::picture() const {
  std::string s = "head gates:\n" + gate_heat_map(gates_->head_values());
  if (!gates_->has_ffn()) return s;
  s += "  FFN neurons open per layer:";
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on " " + std::to_string(n).
  for (int64_t n : open_neurons()) {
    s += ' ';
    s += std::to_string(n);
  }
  return s + "\n";
}

std::string L0Gates::describe() const {
  char line[256];
  std::snprintf(line, sizeof line, "%lld heads gated, %s %g, gate lr %g, temperature %.3f",
                static_cast<long long>(gates_->num_heads()), o_.target_heads > 0 ? "target heads" : "l0_penalty",
                o_.target_heads > 0 ? static_cast<double>(o_.target_heads) : o_.l0_penalty, o_.gate_lr, o_.temperature);
  std::string s = line;
  if (gates_->has_ffn()) {
    std::snprintf(line, sizeof line, "; FFN neurons gated too, ffn_l0_penalty %g", o_.ffn_l0_penalty);
    s += line;
  }
  return s;
}

json L0Gates::finalize(nn::BertModel& model, const FinalizeOptions& o) {
  BertGates::detach(model);
  auto gates = gates_->head_values();
  std::fprintf(stderr, "remove_heads: gates (threshold %.2f)\n%s", o.threshold, gate_heat_map(gates, o.threshold).c_str());
  json out;
  json removed = json::object();
  for (auto& [l, h] : remove_gated_heads(model, gates, o.threshold, o.allow_empty_layers)) removed[std::to_string(l)] = h;
  if (gates_->has_ffn()) {
    std::vector<int64_t> before = model.config.intermediate_sizes;
    std::vector<int64_t> kept = remove_gated_neurons(model, gates_->neuron_values(), o.threshold);
    std::fprintf(stderr, "remove_heads: FFN neurons kept per layer:");
    for (size_t l = 0; l < kept.size(); ++l)
      std::fprintf(stderr, " %lld/%lld", static_cast<long long>(kept[l]), static_cast<long long>(before[l]));
    std::fprintf(stderr, "\n");
    out["ffn_kept"] = kept;
  }
  out["gates"] = gates;
  out["removed"] = removed;
  return out;
}

}  // namespace lopper::pruning
