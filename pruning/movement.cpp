// Movement, soft-movement and magnitude scores per block behind the PruningMethod interface.
#include "pruning/movement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/ops.h"
#include "pruning/compact.h"

namespace lopper::pruning {

using json = nlohmann::json;
using Matrix = MovementPruning::Matrix;

ScoreKind score_kind_from_name(const std::string& s) {
  if (s == "magnitude") return ScoreKind::magnitude;
  if (s == "movement") return ScoreKind::movement;
  if (s == "soft_movement") return ScoreKind::soft_movement;
  const char* guess = s.find("soft") != std::string::npos  ? "soft_movement"
                    : s.find("mov") != std::string::npos ? "movement"
                    : s.find("mag") != std::string::npos ? "magnitude"
                                                         : nullptr;
  LOPPER_FAIL("unknown pruning method '", s, "' (expected magnitude, movement or soft_movement",
              guess ? std::string("; did you mean ") + guess + "?" : std::string(), ")");
}

const char* score_kind_name(ScoreKind k) {
  return k == ScoreKind::magnitude ? "magnitude" : k == ScoreKind::movement ? "movement" : "soft_movement";
}

double cubic_schedule(double initial, double final, int64_t step, int64_t total, double warmup, double cooldown) {
  double t = static_cast<double>(step), T = static_cast<double>(total);
  double tw = warmup * T, span = T - tw - cooldown * T;
  if (t <= tw) return initial;
  if (span <= 0 || t >= tw + span) return final;
  double r = 1.0 - (t - tw) / span;
  return final + (initial - final) * r * r * r;
}

Tensor top_v_mask(const Tensor& scores, int64_t v) {
  const int64_t n = scores.numel();
  LOPPER_CHECK(v >= 0 && v <= n, "[top_v_mask] keep ", v, " of ", n);
  std::vector<double> s = scores.to_vector<double>();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  auto before = [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
  if (v > 0 && v < n) std::nth_element(order.begin(), order.begin() + (v - 1), order.end(), before);
  std::vector<float> m(n, 0.0f);
  for (int64_t k = 0; k < v; ++k) m[order[k]] = 1.0f;
  return Tensor::from_vector(m, scores.shape()).to(scores.dtype()).to(scores.device());
}

namespace {

// (out / bo, 1, in / bi, 1): Linear's block-mask layout; 0 in a block dim is the whole dim.
Shape block_grid(BlockShape b, int64_t out, int64_t in, const std::string& what) {
  int64_t bo = b.rows == 0 ? out : b.rows, bi = b.cols == 0 ? in : b.cols;
  LOPPER_CHECK(bo > 0 && bi > 0 && out % bo == 0 && in % bi == 0, what, ": block [", b.rows, ", ", b.cols,
               "] does not divide the matrix (", out, ", ", in, ")");
  return {out / bo, 1, in / bi, 1};
}

}  // namespace

MovementPruning::MovementPruning(const nn::BertConfig& c, const MovementOptions& o) : o_(o) {
  LOPPER_CHECK(o.final_density > 0 && o.final_density <= 1, "[movement] final_density ", o.final_density,
               " is outside (0, 1]");
  const int64_t H = c.hidden_size, d = c.head_dim();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t A = c.heads_per_layer[l] * d, I = c.intermediate_sizes[l];
    std::string prefix = "encoder.layer." + std::to_string(l) + ".";
    auto add = [&](Matrix x, BlockShape b, int64_t out, int64_t in, const char* key) {
      std::string name = prefix + layer_linear_path(x);
      Shape grid = block_grid(b, out, in, std::string("blocks.") + key + " on " + name);
      groups_.push_back({name, l, grid, Variable(), {{x, grid}}});
    };
    add(Matrix::query, o.blocks.qkv, A, H, "qkv");
    add(Matrix::key, o.blocks.qkv, A, H, "qkv");
    add(Matrix::value, o.blocks.qkv, A, H, "qkv");
    add(Matrix::attention_output, o.blocks.attention_output, H, A, "attention_output");
    if (o.blocks.hybrid_ffn) {
      groups_.push_back({prefix + "ffn_neurons", l, {I}, Variable(),
                         {{Matrix::intermediate, {I, 1, 1, 1}}, {Matrix::output, {1, 1, I, 1}}}});
    } else {
      add(Matrix::intermediate, o.blocks.intermediate, I, H, "intermediate");
      add(Matrix::output, o.blocks.output, H, I, "output");
    }
  }
  if (o.kind != ScoreKind::magnitude)
    for (Group& g : groups_) g.scores = Variable(Tensor::full(g.score_shape, o.score_init), true);
  after_step(0, 1);
}

nn::NamedParams MovementPruning::parameters() {
  nn::NamedParams p;
  for (Group& g : groups_)
    if (g.scores.defined()) p.emplace_back(name() + "." + g.name + ".scores", g.scores);
  return p;
}

void MovementPruning::to(Device d) {
  device_ = d;
  for (Group& g : groups_)
    if (g.scores.defined() && g.scores.data().device() != d) g.scores.mutable_data() = g.scores.data().to(d);
}

// Mean |W| per block (hybrid: over the neuron's intermediate row and output column).
Tensor MovementPruning::magnitude_scores(nn::BertModel& model, const Group& g) const {
  Tensor total;
  for (const Target& t : g.targets) {
    const Tensor& w = layer_linear(model, g.layer, t.matrix).weight.data();
    const Shape& m = t.mask_shape;
    Tensor blocks = abs(w).reshape({m[0], w.size(0) / m[0], m[2], w.size(1) / m[2]});
    Tensor s = mean(mean(blocks, 3, true), 1, true).reshape(g.score_shape);
    total = total.defined() ? add(total, s) : s;
  }
  return total;
}

Tensor MovementPruning::mask_value(nn::BertModel& model, const Group& g) const {
  if (o_.kind == ScoreKind::soft_movement)
    return gt(sigmoid(g.scores.data()), Tensor::scalar(tau_, DType::f32, device_)).to(DType::f32);
  Tensor s = o_.kind == ScoreKind::magnitude ? magnitude_scores(model, g) : g.scores.data();
  int64_t v = std::max<int64_t>(1, std::llround(density_ * static_cast<double>(s.numel())));
  return top_v_mask(s, v);
}

void MovementPruning::attach(nn::BertModel& model, Generator*) {
  double kept = 0, total = 0;
  for (const Group& g : groups_) {
    Tensor value = mask_value(model, g);
    Variable m = g.scores.defined() ? ag::straight_through(g.scores, value) : Variable(value);
    const double share = sum_all(value).item<double>() / static_cast<double>(value.numel());  // of the blocks kept
    for (const Target& t : g.targets) {
      nn::Linear& lin = layer_linear(model, g.layer, t.matrix);
      lin.weight_mask = ag::reshape(m, t.mask_shape);
      kept += share * static_cast<double>(lin.weight.data().numel());
      total += static_cast<double>(lin.weight.data().numel());
    }
  }
  kept_ = total > 0 ? kept / total : 1.0;
}

void MovementPruning::detach(nn::BertModel& model) {
  for (const Group& g : groups_)
    for (const Target& t : g.targets) layer_linear(model, g.layer, t.matrix).weight_mask = Variable();
}

// soft_movement: lambda_t * mean over all scores of sigmoid(S); nothing for the others.
Variable MovementPruning::penalty(int64_t, int64_t) {
  Variable p(Tensor::zeros({}, DType::f32, device_));
  if (o_.kind != ScoreKind::soft_movement || lambda_ == 0) return p;
  double n = 0;
  for (const Group& g : groups_) n += static_cast<double>(g.scores.data().numel());
  for (const Group& g : groups_) p = ag::add(p, ag::scale(ag::sum_all(ag::sigmoid(g.scores)), lambda_ / n));
  return p;
}

void MovementPruning::after_step(int64_t step, int64_t total) {
  density_ = cubic_schedule(1.0, o_.final_density, step, total, o_.warmup, o_.cooldown);
  tau_ = cubic_schedule(0.0, o_.threshold, step, total, o_.warmup, o_.cooldown);
  lambda_ = cubic_schedule(0.0, o_.lambda, step, total, o_.warmup, o_.cooldown);
}

nn::StateDict MovementPruning::state_dict() const {
  nn::StateDict sd;
  for (const Group& g : groups_)
    if (g.scores.defined()) sd[g.name + ".scores"] = g.scores.data().to(Device::cpu());
  sd["schedule.density"] = Tensor::full({}, density_, DType::f64);
  sd["schedule.threshold"] = Tensor::full({}, tau_, DType::f64);
  sd["schedule.lambda"] = Tensor::full({}, lambda_, DType::f64);
  return sd;
}

void MovementPruning::load_state_dict(const nn::StateDict& sd) {
  auto get = [&](const std::string& k) -> const Tensor& {
    auto it = sd.find(k);
    LOPPER_CHECK(it != sd.end(), "[movement] checkpoint has no '", k, "'");
    return it->second;
  };
  for (Group& g : groups_) {
    if (!g.scores.defined()) continue;
    const Tensor& t = get(g.name + ".scores");
    LOPPER_CHECK(t.shape() == g.score_shape, "[movement] ", g.name, ".scores is ", shape_str(t.shape()), ", expected ",
                 shape_str(g.score_shape));
    g.scores.mutable_data().copy_(t);  // a copy: loaded tensors can be read-only views of the file
  }
  density_ = get("schedule.density").item<double>();
  tau_ = get("schedule.threshold").item<double>();
  lambda_ = get("schedule.lambda").item<double>();
}

void MovementPruning::report(json& line) const {
  line["density"] = density_;
  line["weights_kept"] = kept_;
  if (o_.kind == ScoreKind::soft_movement) line["threshold"] = tau_;
}

std::string MovementPruning::status() const {
  char b[64];
  std::snprintf(b, sizeof b, "kept %.1f%%", 100 * kept_);
  return b;
}

std::string MovementPruning::describe() const {
  auto shape = [](BlockShape s) {
    auto d = [](int64_t v) { return v == 0 ? std::string("all") : std::to_string(v); };
    std::string r = "[";
    r.append(d(s.rows)).append(", ").append(d(s.cols)).append("]");
    return r;
  };
  std::string s = std::string(score_kind_name(o_.kind)) + " scores, blocks qkv " + shape(o_.blocks.qkv) +
                  ", attention output " + shape(o_.blocks.attention_output);
  s += o_.blocks.hybrid_ffn ? ", FFN neurons (hybrid)"
                            : ", intermediate " + shape(o_.blocks.intermediate) + ", output " + shape(o_.blocks.output);
  char b[96];
  std::snprintf(b, sizeof b, "; final density %.3g over %zu score groups", o_.final_density, groups_.size());
  return s + b + (o_.filled ? "; heads that keep a block are filled dense at the end" : "");
}

// Folds the masks, then removes exactly what contributes only a constant: a head whose
// attention-output columns are all zero, or whose value rows are (its output, the softmax
// average of its value bias, goes into the output bias); an FFN neuron whose output column
// is zero, or whose intermediate row is (act(bias) times its column goes into the bias).
// Filled: first, every head with a non-zero left gets its unmasked attention weights back.
json MovementPruning::finalize(nn::BertModel& model, const FinalizeOptions& o) {
  const nn::BertConfig& c = model.config;
  const int64_t d = c.head_dim();
  constexpr Matrix kAttention[] = {Matrix::query, Matrix::key, Matrix::value, Matrix::attention_output};
  std::vector<std::vector<Tensor>> unmasked(c.num_hidden_layers);  // filled: attention weights before folding
  if (o_.filled)
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (Matrix x : kAttention) unmasked[l].push_back(layer_linear(model, l, x).weight.data().clone());
  for (const Group& g : groups_) {
    Tensor value = mask_value(model, g);
    for (const Target& t : g.targets) {
      nn::Linear& lin = layer_linear(model, g.layer, t.matrix);
      lin.weight_mask = Variable(value.reshape(t.mask_shape));
      lin.weight.mutable_data() = lin.masked_weight().data().contiguous();
      lin.weight_mask = Variable();
    }
  }
  int64_t filled = 0;
  for (int64_t l = 0; o_.filled && l < c.num_hidden_layers; ++l)
    for (int64_t h = 0; h < (*model.encoder->layer)[l].attention->self->heads; ++h) {
      // Head h: rows [h d, (h + 1) d) of query, key, value; the same columns of the output.
      auto part = [&](int i, const Tensor& w) { return w.slice(i == 3 ? 1 : 0, h * d, (h + 1) * d); };
      bool any = false;
      for (int i = 0; i < 4 && !any; ++i)
        any = sum_all(abs(part(i, layer_linear(model, l, kAttention[i]).weight.data()))).item<double>() != 0;
      if (!any) continue;
      ++filled;
      for (int i = 0; i < 4; ++i) {
        Tensor w = part(i, layer_linear(model, l, kAttention[i]).weight.data());
        w.copy_(part(i, unmasked[l][i]));
      }
    }
  std::map<int64_t, std::vector<int64_t>> heads;
  json neurons_kept = json::array(), layer_density = json::array();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    nn::BertLayer& L = (*model.encoder->layer)[l];
    json ld;
    for (Matrix x : kLayerLinears) {
      const Tensor& w = layer_linear(model, l, x).weight.data();
      ld[layer_linear_path(x)] = w.numel() ? sum_all(ne(w, Tensor::scalar(0.0, w.dtype(), w.device())).to(DType::f64))
                                                     .item<double>() / static_cast<double>(w.numel())
                                           : 0.0;
    }
    layer_density.push_back(ld);
    // Heads.
    nn::Linear &v = *L.attention->self->value, &out = *L.attention->output->dense;
    const int64_t nh = L.attention->self->heads;
    std::vector<int64_t> drop;
    std::vector<bool> live_output;  // per dropped head: its output columns are not all zero
    for (int64_t h = 0; h < nh; ++h) {
      bool no_output = sum_all(abs(out.weight.data().slice(1, h * d, (h + 1) * d))).item<double>() == 0;
      bool no_value = sum_all(abs(v.weight.data().slice(0, h * d, (h + 1) * d))).item<double>() == 0;
      if (no_output || no_value) {
        drop.push_back(h);
        live_output.push_back(!no_output);
      }
    }
    if (static_cast<int64_t>(drop.size()) == nh && !o.allow_empty_layers) drop.pop_back();  // keep one
    for (size_t k = 0; k < drop.size(); ++k) {
      if (!live_output[k]) continue;  // value rows zero: fold W_o[:, h] b_v[h]
      const int64_t h = drop[k];
      Tensor cols = out.weight.data().slice(1, h * d, (h + 1) * d);
      Tensor bv = v.bias.data().slice(0, h * d, (h + 1) * d).reshape({d, 1});
      out.bias.mutable_data() = add(out.bias.data(), matmul(cols, bv).reshape({c.hidden_size}));
    }
    if (!drop.empty()) heads[l] = drop;
    // Neurons.
    nn::Linear &in = *L.intermediate->dense, &fo = *L.output->dense;
    const int64_t I = in.weight.data().size(0);
    Tensor row_abs = sum(abs(in.weight.data()), 1), col_abs = sum(abs(fo.weight.data()), 0);
    std::vector<double> rows = row_abs.to_vector<double>(), cols = col_abs.to_vector<double>();
    std::vector<int64_t> keep, folded;  // folded: a zero row with a live column adds act(bias) * column
    for (int64_t i = 0; i < I; ++i) {
      if (cols[i] == 0) continue;
      (rows[i] != 0 ? keep : folded).push_back(i);
    }
    if (keep.empty()) {  // every layer keeps a neuron
      keep.push_back(0);
      std::erase(folded, int64_t{0});
    }
    if (!folded.empty()) {
      Tensor act_bias = nn::activate(L.intermediate->act, Variable(in.bias.data())).data();
      Tensor idx = Tensor::from_vector(folded, {static_cast<int64_t>(folded.size())}).to(fo.weight.data().device());
      Tensor w = index_select(fo.weight.data(), 1, idx), a = index_select(act_bias, 0, idx);
      fo.bias.mutable_data() = add(fo.bias.data(), matmul(w, a.reshape({a.numel(), 1})).reshape({c.hidden_size}));
    }
    if (static_cast<int64_t>(keep.size()) < I) keep_neurons(model, l, keep);
    neurons_kept.push_back(static_cast<int64_t>(keep.size()));
  }
  if (!heads.empty()) remove_heads(model, heads, o.allow_empty_layers);
  json removed = json::object();
  for (auto& [l, hs] : heads) removed[std::to_string(l)] = hs;
  json r = {{"method", score_kind_name(o_.kind)}, {"heads_removed", removed}, {"neurons_kept", neurons_kept},
            {"density_before_removal", layer_density}};
  if (o_.filled) r["heads_filled"] = filled;
  return r;
}

}  // namespace lopper::pruning
