// One shot and iterative retraining-free pruning, on the pieces in fisher.h and reconstruct.h.
#include "pruning/retrain_free.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "pruning/compact.h"
#include "pruning/gates.h"
#include "pruning/reconstruct.h"

namespace lopper::pruning {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::unique_ptr<nn::BertForSequenceClassification> clone(const nn::BertForSequenceClassification& m) {
  Generator g(0);
  auto c = std::make_unique<nn::BertForSequenceClassification>(m.config(), g);
  c->load_state_dict(m.state_dict());
  c->to(m.classifier->weight.data().device());
  c->eval();
  return c;
}

nn::BertLayer& layer(nn::BertForSequenceClassification& m, size_t l) { return (*m.bert->encoder->layer)[l]; }

double sub_layer_cost(const nn::BertConfig& c, const RetrainFreeOptions& o, bool attention, int64_t n) {
  if (o.constraint == "latency") return (attention ? o.table->attention : o.table->ffn).at(static_cast<size_t>(n));
  return static_cast<double>(n) * (attention ? flops_per_head(c, o.seq_len) : flops_per_neuron(c, o.seq_len));
}

Selection search(const Importance& imp, const nn::BertConfig& c, const RetrainFreeOptions& o, double budget) {
  if (o.constraint == "latency") return search_latency(imp, *o.table, budget);
  return search_linear(imp, flops_per_head(c, o.seq_len), flops_per_neuron(c, o.seq_len), budget);
}

std::vector<double> values(const std::vector<bool>& keep) { return {keep.begin(), keep.end()}; }

// Removes what layer l's attention (or FFN) does not keep, every other layer untouched:
// gates.cpp's removal with 0/1 gates, ones elsewhere. A layer may lose every head (it then
// adds only its output bias); an FFN that keeps no neuron keeps one with a zero output
// column, which computes the same and keeps the layer a shape transformers loads.
void prune_sub_layer(nn::BertForSequenceClassification& m, size_t l, bool attention, const std::vector<bool>& keep) {
  const nn::BertConfig& c = m.config();
  std::vector<std::vector<double>> gates;
  for (int64_t k = 0; k < c.num_hidden_layers; ++k)
    gates.emplace_back(static_cast<size_t>(attention ? c.heads_per_layer[k] : c.intermediate_sizes[k]), 1.0);
  gates[l] = values(keep);
  if (attention) remove_gated_heads(*m.bert, gates, 0.5, true);
  else remove_gated_neurons(*m.bert, gates, 0.5);
}

void set_hooks(nn::BertForSequenceClassification& m, size_t l, const std::vector<double>& heads,
               const std::vector<double>& neurons) {
  nn::BertLayer& L = layer(m, l);
  Device d = m.classifier->weight.data().device();
  std::vector<float> h(heads.begin(), heads.end()), n(neurons.begin(), neurons.end());
  L.attention->self->head_mask = Variable(Tensor::from_vector(h, {static_cast<int64_t>(h.size())}, d));
  L.intermediate->neuron_mask = Variable(Tensor::from_vector(n, {static_cast<int64_t>(n.size())}, d));
}

bool sane(const std::vector<double>& s) {
  if (s.empty()) return false;
  for (double x : s)
    if (!std::isfinite(x) || std::abs(x) > 10) return false;  // Kwon's guard against a bad fit
  return true;
}

nlohmann::json kept_counts(const nn::BertConfig& c) {
  return {{"heads_per_layer", c.heads_per_layer}, {"neurons_per_layer", c.intermediate_sizes}};
}
}  // namespace

double retrain_free_cost(const nn::BertConfig& c, const RetrainFreeOptions& o) {
  double s = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    s += sub_layer_cost(c, o, true, c.heads_per_layer[l]) + sub_layer_cost(c, o, false, c.intermediate_sizes[l]);
  return s;
}

nlohmann::json prune_retrain_free(nn::BertForSequenceClassification& model, const std::vector<ExampleBatch>& batches,
                                  const RetrainFreeOptions& o, const std::function<void(const std::string&)>& progress) {
  LOPPER_CHECK(o.target > 0 && o.target < 1, "[fisher] target ", o.target, " is not in (0, 1)");
  LOPPER_CHECK(o.constraint == "flops" || (o.constraint == "latency" && o.table), "[fisher] constraint '", o.constraint,
               "' (flops, or latency with a table)");
  LOPPER_CHECK(!batches.empty(), "[fisher] no examples");
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  const auto t_all = Clock::now();
  const size_t L = model.bert->encoder->layer->size();
  const double full = retrain_free_cost(model.config(), o), budget = o.target * full;
  nlohmann::json rep = {{"mode", o.iterative ? "iterative" : "one_shot"}, {"constraint", o.constraint},
                        {"target", o.target}, {"seq_len", o.seq_len}, {"full_cost", full}, {"budget", budget}};
  nlohmann::json seconds = {{"gradients", 0.0}, {"search", 0.0}, {"rearrange", 0.0}, {"tune", 0.0}};
  nlohmann::json errors = nlohmann::json::array(), notes = nlohmann::json::array();
  double loss_before = 0, loss_after = 0;
  auto rearranged = [&](const std::vector<bool>& keep, const Tensor& g) {
    auto t = Clock::now();
    std::vector<double> block = fisher_block(g);
    loss_before += pruned_loss(keep, block);
    std::vector<bool> k = rearrange(keep, block);
    loss_after += pruned_loss(k, block);
    seconds["rearrange"] = seconds["rearrange"].get<double>() + since(t);
    return k;
  };
  auto timed = [&](const char* phase, auto&& f) {
    auto t = Clock::now();
    auto r = f();
    seconds[phase] = seconds[phase].get<double>() + since(t);
    return r;
  };
  // The model as given: what every layer is fitted to (only the least squares need it).
  std::unique_ptr<nn::BertForSequenceClassification> teacher = o.tune ? clone(model) : nullptr;

  if (!o.iterative) {
    MaskGradients g = timed("gradients", [&] { return mask_gradients(model, batches); });
    say("gradients of the masks in " + std::to_string(seconds["gradients"].get<double>()) + " s");
    Importance imp;
    for (size_t l = 0; l < L; ++l) {
      imp.heads.push_back(fisher_diagonal(g.heads[l]));
      imp.neurons.push_back(fisher_diagonal(g.neurons[l]));
    }
    Selection sel = timed("search", [&] { return search(imp, model.config(), o, budget); });
    rep["search_cost"] = sel.cost;
    if (o.rearrange)
      for (size_t l = 0; l < L; ++l) {
        sel.heads[l] = rearranged(sel.heads[l], g.heads[l]);
        sel.neurons[l] = rearranged(sel.neurons[l], g.neurons[l]);
      }
    // Removed for real first: the reconstruction then runs on the smaller model, and its
    // equations have only the kept heads' and neurons' columns.
    std::vector<std::vector<double>> heads, neurons;  // 0/1 gates
    for (size_t l = 0; l < L; ++l) {
      heads.push_back(values(sel.heads[l]));
      neurons.push_back(values(sel.neurons[l]));
    }
    remove_gated_heads(*model.bert, heads, 0.5, true);
    remove_gated_neurons(*model.bert, neurons, 0.5);
    if (o.tune) {
      auto t = Clock::now();
      const nn::BertConfig& c = model.config();
      std::vector<std::vector<double>> hv, nv;  // mask values of what is left, 1 until rescaled
      for (size_t l = 0; l < L; ++l) {
        hv.emplace_back(static_cast<size_t>(c.heads_per_layer[l]), 1.0);
        nv.emplace_back(static_cast<size_t>(c.intermediate_sizes[l]), 1.0);
        set_hooks(model, l, hv[l], nv[l]);
      }
      LayerWalk walk(*teacher->bert, *model.bert, batches);
      for (size_t l = 0; l < L; ++l) {
        nn::BertLayer& lay = layer(model, l);
        nlohmann::json err = {{"layer", l}};
        // Each sub-layer: the error with the plain mask, then the rescaled one if its fit is sane.
        auto fit = [&](NormalEquations e, nn::Linear& proj, int64_t group, std::vector<double>& v, const char* what) {
          if (v.empty()) return;
          double before = projection_error(e, masked_projection(proj, v, group));
          std::vector<double> s = solve_scales(e, proj, group, std::vector<bool>(v.size(), true), o.damp);
          if (!sane(s)) {
            notes.push_back("layer " + std::to_string(l) + " " + what + ": the least-squares fit failed or left a scale " +
                            "outside [-10, 10]; its mask stays 0/1");
            return;
          }
          v = s;
          err[what] = {before, projection_error(e, masked_projection(proj, v, group))};
        };
        fit(walk.attention(false), *lay.attention->output->dense, lay.attention->self->head_dim, hv[l], "attention");
        set_hooks(model, l, hv[l], nv[l]);
        walk.attention_done();
        fit(walk.ffn(o.cls_only && l + 1 == L), *lay.output->dense, 1, nv[l], "ffn");
        set_hooks(model, l, hv[l], nv[l]);
        walk.ffn_done();
        errors.push_back(err);
      }
      for (size_t l = 0; l < L; ++l) {  // the scales into the output projections
        nn::BertLayer& lay = layer(model, l);
        lay.attention->self->head_mask = Variable();
        lay.intermediate->neuron_mask = Variable();
        fold_into_columns(*lay.attention->output->dense, hv[l], lay.attention->self->head_dim);
        fold_into_columns(*lay.output->dense, nv[l], 1);
      }
      seconds["tune"] = since(t);
    }
  } else {
    std::optional<LayerWalk> walk;
    if (o.tune) walk.emplace(*teacher->bert, *model.bert, batches);
    for (size_t l = 0; l < L; ++l)
      for (bool attention : {true, false}) {
        // Importance on the model as pruned so far; sub-layers below this one are decided.
        MaskGradients g = timed("gradients", [&] { return mask_gradients(model, batches); });
        const nn::BertConfig& c = model.config();
        Importance imp;
        double decided = 0;
        for (size_t k = 0; k < L; ++k) {
          bool heads_open = k > l || (k == l && attention), neurons_open = k >= l;
          imp.heads.push_back(heads_open ? fisher_diagonal(g.heads[k]) : std::vector<double>());
          imp.neurons.push_back(neurons_open ? fisher_diagonal(g.neurons[k]) : std::vector<double>());
          if (!heads_open) decided += sub_layer_cost(c, o, true, c.heads_per_layer[k]);
          if (!neurons_open) decided += sub_layer_cost(c, o, false, c.intermediate_sizes[k]);
        }
        Selection sel = timed("search", [&] { return search(imp, c, o, budget - decided); });
        std::vector<bool> keep = attention ? sel.heads[l] : sel.neurons[l];
        if (o.rearrange) keep = rearranged(keep, attention ? g.heads[l] : g.neurons[l]);
        nn::BertLayer& lay = layer(model, l);
        prune_sub_layer(model, l, attention, keep);
        if (walk) {  // refit the output projection to the teacher's sub-layer output
          auto t = Clock::now();
          NormalEquations e = attention ? walk->attention(false) : walk->ffn(o.cls_only && l + 1 == L);
          nn::Linear& proj = attention ? *lay.attention->output->dense : *lay.output->dense;
          std::vector<double> ones(static_cast<size_t>(e.w), 1.0);
          double before = projection_error(e, masked_projection(proj, ones, 1));
          if (tune_projection(e, proj, o.damp))
            errors.push_back({{"layer", l}, {attention ? "attention" : "ffn", {before, projection_error(e, masked_projection(proj, ones, 1))}}});
          else
            notes.push_back("layer " + std::to_string(l) + (attention ? " attention" : " ffn") +
                            ": the least-squares refit was not finite; its weights stay");
          if (attention) walk->attention_done();
          else walk->ffn_done();
          seconds["tune"] = seconds["tune"].get<double>() + since(t);
        }
        say("layer " + std::to_string(l) + (attention ? " attention: " : " FFN: ") +
            std::to_string(attention ? model.config().heads_per_layer[l] : model.config().intermediate_sizes[l]) + " kept");
      }
  }
  const nn::BertConfig& c = model.config();
  double cost = retrain_free_cost(c, o);
  rep["cost"] = cost;
  rep["cost_fraction"] = cost / full;
  rep["kept"] = kept_counts(c);
  if (o.rearrange) rep["rearrange_fisher_loss"] = {{"before", loss_before}, {"after", loss_after}};
  if (o.tune) rep["reconstruction_error"] = errors;
  if (!notes.empty()) rep["notes"] = notes;
  seconds["total"] = since(t_all);
  rep["seconds"] = seconds;
  return rep;
}

}  // namespace lopper::pruning
