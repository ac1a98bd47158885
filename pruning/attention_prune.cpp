// The attention-probability rules behind the PruningMethod interface; the hook each layer
// calls in every forward is apply().
#include "pruning/attention_prune.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/ops.h"
#include "core/sparse_attention.h"
#include "pruning/movement.h"

namespace lopper::pruning {

using json = nlohmann::json;

namespace {
constexpr const char* kRuleNames[] = {"topk", "threshold", "learned_threshold", "static_positions"};

// Valid keys per example from the additive mask (B, 1, 1, T): 0 keeps, the dtype's lowest
// drops. Undefined: every key.
std::vector<int64_t> valid_lengths(const Tensor& additive_mask, int64_t b, int64_t t) {
  std::vector<int64_t> len(static_cast<size_t>(b), t);
  if (!additive_mask.defined()) return len;
  std::vector<double> m = additive_mask.reshape({b, t}).to_vector<double>();
  for (int64_t i = 0; i < b; ++i) len[i] = std::count(m.begin() + i * t, m.begin() + (i + 1) * t, 0.0);
  return len;
}

// Which entries are real, 0/1 in dt: keys (B, 1, 1, T) from the additive mask (0 keeps, the
// dtype's lowest drops; undefined: every key), and query x key pairs (B, 1, T, T).
struct ValidEntries {
  Tensor keys, pairs;
};
ValidEntries valid_entries(const Tensor& additive_mask, int64_t b, int64_t t, DType dt, Device dev) {
  Tensor keys = additive_mask.defined() ? eq(additive_mask, Tensor::zeros({}, additive_mask.dtype(), dev)).to(dt)
                                        : Tensor::ones({b, 1, 1, t}, dt, dev);
  return {keys, mul(keys.reshape({b, 1, t, 1}), keys)};
}
}  // namespace

AttentionRule attention_rule_from_name(const std::string& s) {
  for (int i = 0; i < 4; ++i)
    if (s == kRuleNames[i]) return static_cast<AttentionRule>(i);
  LOPPER_FAIL("unknown rule '", s, "' (known: topk, threshold, learned_threshold, static_positions)");
}

const char* attention_rule_name(AttentionRule r) { return kRuleNames[static_cast<int>(r)]; }

void check_attention_options(const AttentionPruneOptions& o) {
  switch (o.rule) {
    case AttentionRule::topk:
    case AttentionRule::static_positions:
      LOPPER_CHECK((o.k != 0) != (o.keep != 0), "k, keep: set exactly one (k entries per row, or keep a share of it)");
      LOPPER_CHECK(o.keep != 0 || o.k > 0, "k: ", o.k, " entries per row; k must be at least 1");
      LOPPER_CHECK(o.k != 0 || (o.keep > 0 && o.keep <= 1), "keep: ", o.keep, " is not a share in (0, 1]");
      LOPPER_CHECK(o.rule != AttentionRule::static_positions || o.max_len > 0, "max_len: ", o.max_len,
                   " positions; static_positions needs data.max_seq_len");
      break;
    case AttentionRule::threshold:
      if (o.relative)
        LOPPER_CHECK(o.threshold >= 0 && std::isfinite(o.threshold), "threshold: ", o.threshold,
                     " is not a multiple >= 0 of the uniform probability (relative)");
      else
        LOPPER_CHECK(o.threshold >= 0 && o.threshold < 1, "threshold: ", o.threshold, " is not a probability in [0, 1)");
      break;
    case AttentionRule::learned_threshold:
      if (o.relative)
        LOPPER_CHECK(o.threshold > 0 && std::isfinite(o.threshold), "threshold: ", o.threshold,
                     " is not an initial multiple > 0 of the uniform probability (relative)");
      else
        LOPPER_CHECK(o.threshold > 0 && o.threshold < 1, "threshold: ", o.threshold,
                     " is not an initial probability in (0, 1) (a learned threshold starts there)");
      LOPPER_CHECK(o.target_sparsity > 0 && o.target_sparsity < 1, "target_sparsity: ", o.target_sparsity,
                   " is not a share in (0, 1)");
      LOPPER_CHECK(o.surrogate_width > 0 && std::isfinite(o.surrogate_width), "surrogate_width: ", o.surrogate_width,
                   " is not a width > 0 (in log probability)");
      break;
  }
  LOPPER_CHECK(o.warmup >= 0 && o.cooldown >= 0 && o.warmup + o.cooldown < 1, "warmup, cooldown: ", o.warmup, ", ",
               o.cooldown, "; each >= 0 and together below 1");
}

AttentionPruning::AttentionPruning(const nn::BertConfig& c, const AttentionPruneOptions& o) : o_(o) {
  check_attention_options(o);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    int64_t h = c.heads_per_layer[l];
    heads_.push_back(h);
    if (o.rule == AttentionRule::learned_threshold)
      theta_.emplace_back(Tensor::full({h}, std::log(o.threshold)), true);
    if (o.rule == AttentionRule::static_positions)
      scores_.emplace_back(Tensor::zeros({h, o.max_len, o.max_len}), true);
  }
  kept_.assign(heads_.size(), {});
  valid_.assign(heads_.size(), {});
}

nn::NamedParams AttentionPruning::parameters() {
  nn::NamedParams p;
  if (frozen_) return p;
  for (size_t l = 0; l < theta_.size(); ++l) p.emplace_back(name() + ".log_threshold." + std::to_string(l), theta_[l]);
  for (size_t l = 0; l < scores_.size(); ++l) p.emplace_back(name() + ".position_scores." + std::to_string(l), scores_[l]);
  return p;
}

void AttentionPruning::attach(nn::BertModel& model, Generator* gen) {
  eval_ = gen == nullptr;
  if (eval_) {
    for (size_t l = 0; l < heads_.size(); ++l) {
      kept_[l].assign(static_cast<size_t>(heads_[l]), 0.0);
      valid_[l].assign(static_cast<size_t>(heads_[l]), 0.0);
    }
  }
  train_kept_ = train_valid_ = 0;
  train_density_ = Variable();
  LOPPER_CHECK(model.encoder->layer->size() == heads_.size(), "[attention_prune] model has ",
               model.encoder->layer->size(), " layers, the rule ", heads_.size());
  for (size_t l = 0; l < heads_.size(); ++l) {
    nn::BertSelfAttention& att = *(*model.encoder->layer)[l].attention->self;
    LOPPER_CHECK(att.heads == heads_[l], "[attention_prune] layer ", l, " has ", att.heads, " heads, the rule ",
                 heads_[l]);
    att.prob_hook = [this, l](const Variable& p, const Tensor& s, const Tensor& m) {
      return apply(static_cast<int64_t>(l), p, s, m);
    };
  }
}

void AttentionPruning::detach(nn::BertModel& model) {
  for (auto& layer : *model.encoder->layer) layer->attention->self->prob_hook = nullptr;
}

void AttentionPruning::to(Device d) {
  for (auto* group : {&theta_, &scores_})
    for (Variable& v : *group) v.mutable_data() = v.data().to(d);
  lagrangian_.to(d);
}

double AttentionPruning::threshold_now() const {
  if (!o_.schedule || frozen_) return o_.threshold;
  return cubic_schedule(0.0, o_.threshold, step_, total_, o_.warmup, o_.cooldown);
}

// k per row (B, H, T): the rule's count of the example's valid keys; the [CLS] row all of them.
Tensor AttentionPruning::row_counts(const std::vector<int64_t>& lengths, int64_t heads, int64_t t, Device d) const {
  const int64_t b = static_cast<int64_t>(lengths.size());
  std::vector<int64_t> k(static_cast<size_t>(b * heads * t));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = lengths[i];
    const int64_t keep = kept_per_row(o_.k, o_.keep, n);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t q = 0; q < t; ++q) k[(i * heads + h) * t + q] = q == 0 && !o_.prune_cls_row ? n : keep;
  }
  return Tensor::from_vector<int64_t>(k, {b, heads, t}).to(d);
}

// probs, scores (B, H, T, T); additive_mask (B, 1, 1, T) or undefined
Variable AttentionPruning::apply(int64_t layer, const Variable& probs, const Tensor& scores, const Tensor& additive_mask) {
  const int64_t b = probs.size(0), h = probs.size(1), t = probs.size(2);
  const Device dev = probs.device();
  const DType dt = probs.dtype();
  std::vector<int64_t> len = valid_lengths(additive_mask, b, t);
  const ValidEntries valid_in = valid_entries(additive_mask, b, t, dt, dev);
  const Tensor &key_valid = valid_in.keys, &pair_valid = valid_in.pairs;  // (B, 1, 1, T), (B, 1, T, T)
  Tensor hard;                                                                      // (B, H, T, T) 0/1
  Variable mask;  // hard, with the gradient of what it came from where that is learned
  if (o_.rule == AttentionRule::topk || o_.rule == AttentionRule::static_positions) {
    Tensor k = row_counts(len, h, t, dev);
    if (o_.rule == AttentionRule::topk) {
      hard = topk_mask(scores, k);
      mask = Variable(hard);
    } else {
      LOPPER_CHECK(t <= o_.max_len, "[attention_prune] ", t, " tokens, static positions scored for ", o_.max_len);
      Variable s = ag::slice(ag::slice(scores_[layer], 1, 0, t), 2, 0, t);              // (H, T, T)
      Variable se = ag::expand(ag::unsqueeze(s, 0), {b, h, t, t});                       // (B, H, T, T)
      Tensor ranked = additive_mask.defined() ? add(se.data(), additive_mask.to(dt)) : se.data();
      hard = topk_mask(ranked, k);
      mask = ag::straight_through(se, hard);
    }
  } else {
    // Keep p >= tau among valid keys, each row's largest entry, and the [CLS] row.
    Tensor always = topk_mask(scores, Tensor::full({b, h, t}, 1, DType::i64, dev));  // (B, H, T, T): each row's largest
    if (!o_.prune_cls_row) {
      Tensor cls = Tensor::zeros({1, 1, t, 1}, dt, dev);  // 1 at query row 0
      cls.slice(2, 0, 1).copy_(Tensor::ones({}, dt, dev));
      always = maximum(always, mul(cls, key_valid));
    }
    // p in the threshold's units: a probability, or a multiple of the row's 1/n (relative)
    Tensor p = probs.data();  // (B, H, T, T)
    if (o_.relative) {
      std::vector<double> n(len.begin(), len.end());
      p = mul(p, Tensor::from_vector<double>(n, {b, 1, 1, 1}).to(dt).to(dev));
    }
    Tensor tau = o_.rule == AttentionRule::threshold
                     ? Tensor::full({}, threshold_now(), dt, dev)                    // ()
                     : exp(theta_[layer].data()).reshape({1, h, 1, 1}).to(dt);  // (1, H, 1, 1)
    Tensor above = mul(ge(p, tau).to(dt), key_valid);
    hard = maximum(above, always);
    if (o_.rule == AttentionRule::learned_threshold && !frozen_) {
      // Backward through sigmoid((log p - log tau) / width); the model's path is not through here.
      Tensor log_p = log(maximum(p, Tensor::full({}, 1e-30, dt, dev)));  // no -inf at padded keys
      Variable log_tau = ag::reshape(theta_[layer], {1, h, 1, 1});
      if (log_tau.dtype() != dt) log_tau = Variable(log_tau.data().to(dt));
      Variable soft = ag::sigmoid(ag::scale(ag::sub(Variable(log_p), log_tau), 1.0 / o_.surrogate_width));
      mask = ag::straight_through(soft, hard);
    } else {
      mask = Variable(hard);
    }
  }
  // Counts over valid query x key entries: per head for evaluation, in all for training.
  Tensor kept = sum(sum(sum(mul(hard, pair_valid), 3), 2), 0);  // (H)
  double valid = 0;
  for (int64_t n : len) valid += static_cast<double>(n * n);
  if (eval_) {
    std::vector<double> kv = kept.to_vector<double>();
    for (int64_t i = 0; i < h; ++i) {
      kept_[layer][i] += kv[i];
      valid_[layer][i] += valid;
    }
  } else {
    train_kept_ += sum_all(kept).item<double>();
    train_valid_ += valid * static_cast<double>(h);
    if (o_.rule == AttentionRule::learned_threshold && !frozen_) {
      Variable k = ag::sum_all(ag::mul(mask, Variable(pair_valid)));  // (), its gradient through tau
      train_density_ = train_density_.defined() ? ag::add(train_density_, k) : k;
    }
  }
  Variable out = ag::mul(probs, mask);  // (B, H, T, T)
  if (o_.renormalize) out = ag::div(out, ag::sum(out, -1, true));
  return out;
}

Variable AttentionPruning::penalty(int64_t step, int64_t total) {
  total_ = std::max<int64_t>(total, 1);
  if (o_.rule != AttentionRule::learned_threshold || frozen_ || !train_density_.defined())
    return Variable(Tensor::zeros({}));
  Variable density = ag::scale(train_density_, 1.0 / std::max(train_valid_, 1.0));  // ()
  // The target moves from the density the initial thresholds give (the first step's) to
  // the final one, so the multipliers never first push toward denser masks.
  if (start_density_ < 0) start_density_ = density.data().item<double>();
  target_density_ = cubic_schedule(start_density_, 1.0 - o_.target_sparsity, step, total_, o_.warmup, o_.cooldown);
  if (density.dtype() != DType::f32) density = Variable(density.data().to(DType::f32));
  return lagrangian_.penalty(density, target_density_);
}

void AttentionPruning::after_step(int64_t step, int64_t total) {
  step_ = step + 1;
  total_ = std::max<int64_t>(total, 1);
  if (o_.rule == AttentionRule::learned_threshold && !frozen_) lagrangian_.ascend(o_.lagrangian_lr);
}

void AttentionPruning::freeze() {
  if (o_.schedule) step_ = total_;  // the final threshold from here on
  frozen_ = true;
}

void AttentionPruning::calibrate(nn::BertModel& model, const std::function<void()>& forwards) {
  LOPPER_CHECK(o_.rule == AttentionRule::static_positions, "[attention_prune] calibrate is for static_positions");
  std::vector<Tensor> sum_p(heads_.size()), count(heads_.size());  // (H, L, L), (1, L, L)
  const int64_t L = o_.max_len;
  for (size_t l = 0; l < heads_.size(); ++l) {
    nn::BertSelfAttention& att = *(*model.encoder->layer)[l].attention->self;
    att.prob_hook = [&, l](const Variable& p, const Tensor&, const Tensor& m) {
      const int64_t b = p.size(0), h = p.size(1), t = p.size(2);
      Tensor pv = valid_entries(m, b, t, DType::f32, p.device()).pairs;      // (B, 1, T, T)
      Tensor s = sum(mul(p.data().to(DType::f32), pv), 0);                   // (H, T, T)
      Tensor c = sum(pv, 0);                                                  // (1, T, T)
      Tensor ps = Tensor::zeros({h, L, L}, DType::f32, p.device()), pc = Tensor::zeros({1, L, L}, DType::f32, p.device());
      ps.slice(1, 0, t).slice(2, 0, t).copy_(s);
      pc.slice(1, 0, t).slice(2, 0, t).copy_(c);
      sum_p[l] = sum_p[l].defined() ? add(sum_p[l], ps) : ps;
      count[l] = count[l].defined() ? add(count[l], pc) : pc;
      return p;
    };
  }
  forwards();
  detach(model);
  for (size_t l = 0; l < heads_.size(); ++l) {
    LOPPER_CHECK(sum_p[l].defined(), "[attention_prune] calibration ran no forward");
    // Mean probability where seen; positions never seen rank last.
    Tensor seen = gt(count[l], Tensor::zeros({}, DType::f32, count[l].device()));
    Tensor mean = div(sum_p[l], maximum(count[l], Tensor::ones({}, DType::f32, count[l].device())));
    scores_[l].mutable_data() = where(seen, mean, Tensor::full({}, -1.0, DType::f32, mean.device())).contiguous();
  }
}

nn::StateDict AttentionPruning::state_dict() const {
  nn::StateDict sd;
  for (size_t l = 0; l < theta_.size(); ++l) sd["log_threshold." + std::to_string(l)] = theta_[l].data();
  for (size_t l = 0; l < scores_.size(); ++l) sd["position_scores." + std::to_string(l)] = scores_[l].data();
  sd["lagrangian.lambda_1"] = Tensor::full({}, lagrangian_.lambda_1());
  sd["lagrangian.lambda_2"] = Tensor::full({}, lagrangian_.lambda_2());
  sd["step"] = Tensor::full({}, static_cast<double>(step_), DType::f64);
  sd["total"] = Tensor::full({}, static_cast<double>(total_), DType::f64);
  sd["frozen"] = Tensor::full({}, frozen_ ? 1.0 : 0.0);
  sd["start_density"] = Tensor::full({}, start_density_, DType::f64);
  return sd;
}

void AttentionPruning::load_state_dict(const nn::StateDict& sd) {
  auto get = [&](const std::string& k) -> const Tensor& {
    auto it = sd.find(k);
    LOPPER_CHECK(it != sd.end(), "[attention_prune] state has no '", k, "'");
    return it->second;
  };
  // Copied into our own tensors: a loaded tensor may be a read-only view of the file.
  auto load = [&](Variable& v, const std::string& k) {
    const Tensor& src = get(k);
    LOPPER_CHECK(src.shape() == v.shape(), "[attention_prune] state '", k, "' is ", shape_str(src.shape()), ", the rule's ",
                 shape_str(v.shape()), " (was the model or max_seq_len changed?)");
    v.mutable_data().copy_(src);
  };
  for (size_t l = 0; l < theta_.size(); ++l) load(theta_[l], "log_threshold." + std::to_string(l));
  for (size_t l = 0; l < scores_.size(); ++l) load(scores_[l], "position_scores." + std::to_string(l));
  lagrangian_.set(get("lagrangian.lambda_1").item<double>(), get("lagrangian.lambda_2").item<double>());
  step_ = static_cast<int64_t>(get("step").item<double>());
  total_ = static_cast<int64_t>(get("total").item<double>());
  frozen_ = get("frozen").item<double>() != 0;
  start_density_ = get("start_density").item<double>();
}

nlohmann::json AttentionPruning::rule_json() const {
  json j = {{"rule", attention_rule_name(o_.rule)},
            {"renormalize", o_.renormalize},
            {"prune_cls_row", o_.prune_cls_row}};
  if (o_.k > 0) j["k"] = o_.k;
  if (o_.keep > 0) j["keep"] = o_.keep;
  if (o_.rule == AttentionRule::threshold || o_.rule == AttentionRule::learned_threshold) j["relative"] = o_.relative;
  if (o_.rule == AttentionRule::threshold) j["threshold"] = threshold_now();
  if (o_.rule == AttentionRule::learned_threshold) {
    json t = json::array();
    for (const Variable& v : theta_) t.push_back(exp(v.data()).to_vector<double>());
    j["threshold"] = t;  // [layer][head]
    j["target_sparsity"] = o_.target_sparsity;
  }
  if (o_.rule == AttentionRule::static_positions) j["max_len"] = o_.max_len;
  return j;
}

nlohmann::json AttentionPruning::sparsity_report() const {
  json per_head = json::array(), per_layer = json::array();
  double kept = 0, valid = 0;
  for (size_t l = 0; l < heads_.size(); ++l) {
    json row = json::array();
    double lk = 0, lv = 0;
    for (size_t h = 0; h < kept_[l].size(); ++h) {
      row.push_back(valid_[l][h] > 0 ? 1 - kept_[l][h] / valid_[l][h] : 0.0);
      lk += kept_[l][h];
      lv += valid_[l][h];
    }
    per_head.push_back(row);
    per_layer.push_back(lv > 0 ? 1 - lk / lv : 0.0);
    kept += lk;
    valid += lv;
  }
  return {{"sparsity", valid > 0 ? 1 - kept / valid : 0.0}, {"per_layer", per_layer}, {"per_head", per_head},
          {"entries", valid}};
}

Tensor AttentionPruning::eval_counts() const {
  std::vector<double> c;
  for (const auto* group : {&kept_, &valid_})
    for (const auto& layer : *group) c.insert(c.end(), layer.begin(), layer.end());
  return Tensor::from_vector<double>(c, {static_cast<int64_t>(c.size())});
}

void AttentionPruning::set_eval_counts(const Tensor& counts) {
  std::vector<double> c = counts.to_vector<double>();
  size_t i = 0;
  for (auto* group : {&kept_, &valid_})
    for (auto& layer : *group)
      for (double& v : layer) {
        LOPPER_CHECK(i < c.size(), "[attention_prune] ", c.size(), " counts for more entries");
        v = c[i++];
      }
  LOPPER_CHECK(i == c.size(), "[attention_prune] ", c.size(), " counts for ", i, " entries");
}

void AttentionPruning::report(json& line) const {
  if (train_valid_ > 0) line["attention_sparsity"] = 1 - train_kept_ / train_valid_;
  if (o_.rule == AttentionRule::threshold && o_.schedule) line["attention_threshold"] = threshold_now();
  if (o_.rule == AttentionRule::learned_threshold) {
    line["attention_target_sparsity"] = 1 - target_density_;
    line["lambda_1"] = lagrangian_.lambda_1();
    line["lambda_2"] = lagrangian_.lambda_2();
  }
}

std::string AttentionPruning::status() const {
  char s[64];
  std::snprintf(s, sizeof s, "attn sparsity %.1f%%", train_valid_ > 0 ? 100 * (1 - train_kept_ / train_valid_) : 0.0);
  return s;
}

std::string AttentionPruning::describe() const {
  std::ostringstream o;
  o << "attention probabilities, rule " << attention_rule_name(o_.rule);
  if (o_.k > 0) o << ", k " << o_.k << " per row";
  if (o_.keep > 0) o << ", keep " << o_.keep << " of each row";
  const char* unit = o_.relative ? "/n" : "";
  if (o_.rule == AttentionRule::threshold)
    o << ", p >= " << o_.threshold << unit << (o_.schedule ? " (cubic from 0)" : "");
  if (o_.rule == AttentionRule::learned_threshold)
    o << ", thresholds per head from " << o_.threshold << unit << " toward sparsity " << o_.target_sparsity;
  o << (o_.renormalize ? ", renormalized" : "") << (o_.prune_cls_row ? ", [CLS] row pruned" : ", [CLS] row dense");
  return o.str();
}

std::string AttentionPruning::picture() const {
  json r = sparsity_report();
  if (r["entries"].get<double>() == 0) return "";
  std::ostringstream o;
  char buf[32];
  for (size_t l = 0; l < r["per_head"].size(); ++l) {
    o << "  layer " << l << (l < 10 ? "  |" : " |");
    for (const json& v : r["per_head"][l]) {
      std::snprintf(buf, sizeof buf, " %3.0f", 100 * v.get<double>());
      o << buf;
    }
    std::snprintf(buf, sizeof buf, " | %.1f%%\n", 100 * r["per_layer"][l].get<double>());
    o << buf;
  }
  return o.str();
}

nlohmann::json AttentionPruning::finalize(nn::BertModel&, const FinalizeOptions&) {
  freeze();
  return {{"attention_rule", rule_json()}};
}

}  // namespace lopper::pruning
