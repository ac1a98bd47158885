// Head and FFN gates on a BERT encoder, their removal, and the Lagrangian head-count target.
#include "pruning/gates.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/ops.h"
#include "pruning/compact.h"

namespace lopper::pruning {

namespace {
Variable sum_expected(const nn::ModuleList<HardConcreteGates>& gates) {
  Variable total;
  for (const auto& g : gates) {
    if (g->log_alpha.numel() == 0) continue;
    Variable e = g->expected_l0();
    total = total.defined() ? ag::add(total, e) : e;
  }
  LOPPER_CHECK(total.defined(), "[gates] nothing left to gate");
  return total;
}

std::vector<std::vector<double>> values_of(const nn::ModuleList<HardConcreteGates>* gates) {
  std::vector<std::vector<double>> v;
  if (gates)
    for (const auto& g : *gates) v.push_back(g->log_alpha.numel() ? g->values() : std::vector<double>{});
  return v;
}

}  // namespace

BertGates::BertGates(const nn::BertConfig& c, bool ffn, HardConcreteParams p, double init_log_alpha) {
  heads_ = register_module("heads", std::make_shared<nn::ModuleList<HardConcreteGates>>());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    heads_->push_back(std::make_shared<HardConcreteGates>(c.heads_per_layer.at(static_cast<size_t>(l)), p, init_log_alpha));
  if (!ffn) return;
  ffn_ = register_module("ffn", std::make_shared<nn::ModuleList<HardConcreteGates>>());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    ffn_->push_back(std::make_shared<HardConcreteGates>(c.intermediate_sizes.at(static_cast<size_t>(l)), p, init_log_alpha));
}

void BertGates::attach(nn::BertModel& model, Generator* gen) const {
  // The sites by their Hugging Face names: "encoder.layer.3.attention.self", "encoder.layer.3.intermediate".
  auto att = model.named_modules_of_type<nn::BertSelfAttention>();
  auto ffn = model.named_modules_of_type<nn::BertIntermediate>();
  LOPPER_CHECK(att.size() == heads_->size(), "[gates] gates for ", heads_->size(), " layers, model has ", att.size());
  for (size_t l = 0; l < heads_->size(); ++l) {  // heads then neurons of each layer: the order gen is drawn in
    auto [name, a] = att[l];
    const HardConcreteGates& g = (*heads_)[l];
    LOPPER_CHECK(g.log_alpha.numel() == a->heads, "[gates] ", name, ": ", g.log_alpha.numel(), " gates for ", a->heads,
                 " heads");
    a->head_mask = a->heads > 0 ? g.forward(gen) : Variable();
    if (!ffn_) continue;
    auto [fname, f] = ffn[l];
    const HardConcreteGates& n = (*ffn_)[l];
    LOPPER_CHECK(n.log_alpha.numel() == f->dense->weight.size(0), "[gates] ", fname, ": ", n.log_alpha.numel(),
                 " gates for ", f->dense->weight.size(0), " FFN neurons");
    f->neuron_mask = n.forward(gen);
  }
}

void BertGates::detach(nn::BertModel& model) {
  for (auto& [name, a] : model.named_modules_of_type<nn::BertSelfAttention>()) a->head_mask = Variable();
  for (auto& [name, f] : model.named_modules_of_type<nn::BertIntermediate>()) f->neuron_mask = Variable();
}

Variable BertGates::expected_heads() const { return sum_expected(*heads_); }

Variable BertGates::expected_neurons() const {
  LOPPER_CHECK(ffn_ != nullptr, "[gates] no FFN gates");
  return sum_expected(*ffn_);
}

std::vector<std::vector<double>> BertGates::head_values() const { return values_of(heads_.get()); }
std::vector<std::vector<double>> BertGates::neuron_values() const { return values_of(ffn_.get()); }

int64_t BertGates::num_heads() const {
  int64_t n = 0;
  for (const auto& g : *heads_) n += g->log_alpha.numel();
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
    // The output projection's input is the heads' contexts side by side.
    fold_into_columns(*L.attention->output->dense, gates[l], att.head_dim);
  }
  auto drop = heads_below(gates, threshold, allow_empty);
  for (const auto& layer : *model.encoder->layer) layer->attention->self->head_mask = Variable();
  remove_heads(model, drop, allow_empty);
  return drop;
}

std::vector<int64_t> remove_gated_neurons(nn::BertModel& model, const std::vector<std::vector<double>>& gates,
                                          double threshold) {
  LOPPER_CHECK(gates.size() == model.encoder->layer->size(), "[remove_neurons] gates for ", gates.size(),
               " layers, model has ", model.encoder->layer->size());
  std::vector<int64_t> kept;
  for (size_t l = 0; l < gates.size(); ++l) {
    nn::BertLayer& L = (*model.encoder->layer)[l];
    const auto& g = gates[l];
    LOPPER_CHECK(static_cast<int64_t>(g.size()) == L.intermediate->dense->weight.size(0), "[remove_neurons] layer ", l, ": ",
                 g.size(), " gate values for ", L.intermediate->dense->weight.size(0), " neurons");
    fold_into_columns(*L.output->dense, g, 1);
    std::vector<int64_t> keep;
    for (size_t i = 0; i < g.size(); ++i)
      if (g[i] >= threshold) keep.push_back(static_cast<int64_t>(i));
    if (keep.empty() && !g.empty()) keep.push_back(std::max_element(g.begin(), g.end()) - g.begin());
    L.intermediate->neuron_mask = Variable();
    keep_neurons(model, static_cast<int64_t>(l), keep);
    kept.push_back(static_cast<int64_t>(keep.size()));
  }
  return kept;
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
  lambda_1_.mutable_data() = Tensor::full({}, l1, DType::f32, lambda_1_.data().device());
  lambda_2_.mutable_data() = Tensor::full({}, l2, DType::f32, lambda_2_.data().device());
}

void Lagrangian::to(Device d) {
  lambda_1_.mutable_data() = lambda_1_.data().to(d);
  lambda_2_.mutable_data() = lambda_2_.data().to(d);
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
