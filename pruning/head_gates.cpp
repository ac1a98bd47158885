// Head gates on a BERT encoder, their removal, and the Lagrangian head-count target.
#include "pruning/head_gates.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/ops.h"
#include "pruning/compact.h"

namespace lopper::pruning {

HeadGates::HeadGates(const nn::BertConfig& c, HardConcreteParams p, double init_log_alpha) {
  layers_ = register_module("layers", std::make_shared<nn::ModuleList<HardConcreteGates>>());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    layers_->push_back(std::make_shared<HardConcreteGates>(c.heads_per_layer.at(static_cast<size_t>(l)), p, init_log_alpha));
}

void HeadGates::attach(nn::BertModel& model, Generator* gen) const {
  LOPPER_CHECK(model.encoder->layer->size() == layers_->size(), "[head_gates] gates for ", layers_->size(),
               " layers, model has ", model.encoder->layer->size());
  for (size_t l = 0; l < layers_->size(); ++l) {
    nn::BertSelfAttention& att = *(*model.encoder->layer)[l].attention->self;
    const HardConcreteGates& g = (*layers_)[l];
    LOPPER_CHECK(g.log_alpha.numel() == att.heads, "[head_gates] layer ", l, ": ", g.log_alpha.numel(),
                 " gates for ", att.heads, " heads");
    att.head_gate = att.heads > 0 ? g.forward(gen) : Variable();
  }
}

void HeadGates::detach(nn::BertModel& model) {
  for (const auto& layer : *model.encoder->layer) layer->attention->self->head_gate = Variable();
}

Variable HeadGates::expected_l0() const {
  Variable total;
  for (const auto& g : *layers_) {
    if (g->log_alpha.numel() == 0) continue;
    Variable e = g->expected_l0();
    total = total.defined() ? ag::add(total, e) : e;
  }
  LOPPER_CHECK(total.defined(), "[head_gates] the model has no heads left to gate");
  return total;
}

std::vector<std::vector<double>> HeadGates::values() const {
  std::vector<std::vector<double>> v;
  for (const auto& g : *layers_) v.push_back(g->log_alpha.numel() ? g->values() : std::vector<double>{});
  return v;
}

int64_t HeadGates::num_heads() const {
  int64_t n = 0;
  for (const auto& g : *layers_) n += g->log_alpha.numel();
  return n;
}

std::map<int64_t, std::vector<int64_t>> heads_below(const std::vector<std::vector<double>>& gates, double threshold,
                                                    bool allow_empty) {
  std::map<int64_t, std::vector<int64_t>> drop;
  for (size_t l = 0; l < gates.size(); ++l) {
    const auto& g = gates[l];
    if (g.empty()) continue;
    std::vector<int64_t> d;
    for (size_t h = 0; h < g.size(); ++h)
      if (g[h] < threshold) d.push_back(static_cast<int64_t>(h));
    if (d.size() == g.size() && !allow_empty) {
      int64_t best = std::max_element(g.begin(), g.end()) - g.begin();
      d.erase(std::find(d.begin(), d.end(), best));
    }
    if (!d.empty()) drop[static_cast<int64_t>(l)] = d;
  }
  return drop;
}

std::map<int64_t, std::vector<int64_t>> remove_gated_heads(nn::BertModel& model,
                                                           const std::vector<std::vector<double>>& gates,
                                                           double threshold, bool allow_empty) {
  LOPPER_CHECK(gates.size() == model.encoder->layer->size(), "[remove_heads] gates for ", gates.size(), " layers, model has ",
               model.encoder->layer->size());
  for (size_t l = 0; l < gates.size(); ++l) {
    nn::BertLayer& L = (*model.encoder->layer)[l];
    const nn::BertSelfAttention& att = *L.attention->self;
    LOPPER_CHECK(static_cast<int64_t>(gates[l].size()) == att.heads, "[remove_heads] layer ", l, ": ", gates[l].size(),
                 " gate values for ", att.heads, " heads");
    // The output projection's input is the heads' contexts side by side: gate h scales
    // columns [h * head_dim, (h + 1) * head_dim).
    std::vector<float> scale;  // (heads * head_dim)
    for (double g : gates[l]) scale.insert(scale.end(), static_cast<size_t>(att.head_dim), static_cast<float>(g));
    if (scale.empty()) continue;
    nn::Linear& out = *L.attention->output->dense;
    Tensor s = Tensor::from_vector(scale, {1, static_cast<int64_t>(scale.size())}, out.weight.device());
    out.weight.mutable_data() = mul(out.weight.data(), s).contiguous();
  }
  auto drop = heads_below(gates, threshold, allow_empty);
  HeadGates::detach(model);
  remove_heads(model, drop, allow_empty);
  return drop;
}

Variable Lagrangian::penalty(const Variable& expected_fraction, double target_fraction) {
  Variable d = ag::add_scalar(expected_fraction, -target_fraction);
  return ag::add(ag::mul(lambda_1_, d), ag::mul(lambda_2_, ag::mul(d, d)));
}

void Lagrangian::ascend(double lr) {
  for (const Variable* v : {&lambda_1_, &lambda_2_}) {
    if (!v->grad().defined()) continue;
    v->mutable_data() = add(v->data(), scale(v->grad(), lr));
    v->zero_grad();
  }
}

void Lagrangian::set(double l1, double l2) {
  lambda_1_.mutable_data() = Tensor::full({}, l1);
  lambda_2_.mutable_data() = Tensor::full({}, l2);
}

std::string gate_heat_map(const std::vector<std::vector<double>>& gates, double threshold) {
  static const char kShades[] = " .:-=+*#%@";
  std::ostringstream o;
  int64_t open = 0, total = 0;
  for (size_t l = 0; l < gates.size(); ++l) {
    int64_t n = 0;
    o << "  layer " << l << (l < 10 ? "  |" : " |");
    for (double g : gates[l]) {
      o << kShades[std::clamp(static_cast<int>(g * 10), 0, 9)];
      n += g >= threshold;
    }
    o << "| " << n << "/" << gates[l].size() << "\n";
    open += n;
    total += static_cast<int64_t>(gates[l].size());
  }
  o << "  heads open: " << open << " of " << total << "\n";
  return o.str();
}

}  // namespace lopper::pruning
