// AdamW (fused kernel), SGD, clipping and schedules.
#include "nn/optim.h"

#include <cmath>

#include "core/ops.h"

namespace lopper::nn {

std::vector<ParamGroup> decay_groups(const NamedParams& params, double lr, double wd) {
  ParamGroup decay{"decay", {}, lr, wd}, no_decay{"no_decay", {}, lr, 0.0};
  for (const auto& [name, v] : params) {
    bool nd = name.ends_with(".bias") || name == "bias" || name.find("LayerNorm") != std::string::npos ||
              name.find("layer_norm") != std::string::npos;
    (nd ? no_decay : decay).params.emplace_back(name, v);
  }
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(std::move(decay));
  if (!no_decay.params.empty()) out.push_back(std::move(no_decay));
  return out;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& [n, v] : g.params) v.zero_grad();
}

AdamW::AdamW(std::vector<ParamGroup> groups, double beta1, double beta2, double eps)
    : Optimizer(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  LOPPER_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "[adamw] betas (", beta1, ", ", beta2,
               ") must be in [0, 1)");
  for (auto& g : groups_) {
    m_.emplace_back();
    v_.emplace_back();
    for (auto& [n, p] : g.params) {
      m_.back().push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      v_.back().push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    }
  }
}

void AdamW::step(double lr_factor) {
  ++steps_;
  float bc1 = static_cast<float>(1.0 - std::pow(beta1_, static_cast<double>(steps_)));
  float bc2 = static_cast<float>(1.0 - std::pow(beta2_, static_cast<double>(steps_)));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    kernels::AdamWStep s{static_cast<float>(g.lr * lr_factor), static_cast<float>(beta1_),
                         static_cast<float>(beta2_), static_cast<float>(eps_),
                         static_cast<float>(g.weight_decay), bc1, bc2};
    for (size_t pi = 0; pi < g.params.size(); ++pi) {
      const Variable& p = g.params[pi].second;
      // A parameter without a gradient (frozen or unused this step) keeps its moments.
      if (!p.grad().defined()) continue;
      adamw_step(s, p.data(), p.grad().contiguous(), m_[gi][pi], v_[gi][pi]);
    }
  }
}

StateDict AdamW::state_dict() const {
  StateDict sd;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      sd[groups_[gi].params[pi].first + ".exp_avg"] = m_[gi][pi];
      sd[groups_[gi].params[pi].first + ".exp_avg_sq"] = v_[gi][pi];
    }
  sd["step"] = Tensor::scalar(static_cast<double>(steps_), DType::i64);
  return sd;
}

void AdamW::load_state_dict(const StateDict& sd) {
  auto get = [&](const std::string& k) -> const Tensor& {
    auto it = sd.find(k);
    LOPPER_CHECK(it != sd.end(), "[adamw] optimizer state has no '", k, "'");
    return it->second;
  };
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      const std::string& n = groups_[gi].params[pi].first;
      m_[gi][pi].copy_(get(n + ".exp_avg"));
      v_[gi][pi].copy_(get(n + ".exp_avg_sq"));
    }
  steps_ = get("step").item<int64_t>();
}

SGD::SGD(std::vector<ParamGroup> groups, double momentum) : Optimizer(std::move(groups)), momentum_(momentum) {
  for (auto& g : groups_) {
    buf_.emplace_back();
    for (auto& [n, p] : g.params) buf_.back().push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }
}

void SGD::step(double lr_factor) {
  ++steps_;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    for (size_t pi = 0; pi < g.params.size(); ++pi) {
      const Variable& p = g.params[pi].second;
      if (!p.grad().defined()) continue;
      // d = g + wd * p;  buf = momentum * buf + d;  p -= lr * buf
      Tensor d = g.weight_decay != 0 ? add(p.grad(), scale(p.data(), g.weight_decay)) : p.grad();
      Tensor& buf = buf_[gi][pi];
      if (momentum_ != 0) {
        buf.copy_(add(scale(buf, momentum_), d));
        d = buf;
      }
      p.mutable_data().copy_(sub(p.data(), scale(d, g.lr * lr_factor)));
    }
  }
}

StateDict SGD::state_dict() const {
  StateDict sd;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi)
      sd[groups_[gi].params[pi].first + ".momentum_buffer"] = buf_[gi][pi];
  sd["step"] = Tensor::scalar(static_cast<double>(steps_), DType::i64);
  return sd;
}

void SGD::load_state_dict(const StateDict& sd) {
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t pi = 0; pi < groups_[gi].params.size(); ++pi) {
      auto it = sd.find(groups_[gi].params[pi].first + ".momentum_buffer");
      LOPPER_CHECK(it != sd.end(), "[sgd] optimizer state has no buffer for ", groups_[gi].params[pi].first);
      buf_[gi][pi].copy_(it->second);
    }
  auto it = sd.find("step");
  LOPPER_CHECK(it != sd.end(), "[sgd] optimizer state has no 'step'");
  steps_ = it->second.item<int64_t>();
}

double grad_norm(const std::vector<Variable>& params) {
  double sq = 0;
  for (const Variable& p : params)
    if (p.grad().defined()) sq += sum_all(square(p.grad().to(DType::f32))).item<double>();
  return std::sqrt(sq);
}

double clip_grad_norm(const std::vector<Variable>& params, double max_norm) {
  double norm = grad_norm(params);
  if (max_norm > 0 && norm > max_norm) {
    double s = max_norm / (norm + 1e-6);
    for (const Variable& p : params)
      if (p.grad().defined()) p.set_grad(scale(p.grad(), s));
  }
  return norm;
}

ScheduleKind schedule_from_name(const std::string& n) {
  if (n == "constant") return ScheduleKind::constant;
  if (n == "linear") return ScheduleKind::linear;
  if (n == "cosine") return ScheduleKind::cosine;
  LOPPER_FAIL("[schedule] unknown schedule '", n, "' (expected constant, linear, cosine)");
}

double LrSchedule::factor(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::constant) return 1.0;
  double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  if (kind == ScheduleKind::linear) return std::max(0.0, 1.0 - progress);
  return 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace lopper::nn
