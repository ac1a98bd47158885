// Hard-Concrete sampling and the L0 penalty, composed from autograd functions.
#include "pruning/hard_concrete.h"

#include <cmath>

#include "autograd/functions.h"

namespace lopper::pruning {

HardConcreteGates::HardConcreteGates(int64_t n, HardConcreteParams p, double init_log_alpha) : params(p) {
  LOPPER_CHECK(p.beta > 0 && p.gamma < 0 && p.zeta > 1, "[hard_concrete] need beta > 0, gamma < 0, zeta > 1; got beta ",
               p.beta, " gamma ", p.gamma, " zeta ", p.zeta);
  log_alpha = register_parameter("log_alpha", Tensor::full({n}, init_log_alpha));
}

Variable HardConcreteGates::forward(Generator* gen) const {
  Variable s;
  if (gen && is_training()) {
    // logit(u) for u in (0, 1); the bounds keep log finite.
    Tensor u = uniform(log_alpha.shape(), 1e-6, 1.0 - 1e-6, *gen, log_alpha.dtype(), log_alpha.device());
    Tensor logit_u = sub(log(u), log(add_scalar(neg(u), 1.0)));
    s = ag::sigmoid(ag::scale(ag::add(log_alpha, Variable(logit_u)), 1.0 / params.beta));
  } else {
    s = ag::sigmoid(log_alpha);
  }
  return ag::clamp(ag::add_scalar(ag::scale(s, params.zeta - params.gamma), params.gamma), 0.0, 1.0);
}

Variable HardConcreteGates::expected_l0() const {
  double shift = params.beta * std::log(-params.gamma / params.zeta);
  return ag::sum_all(ag::sigmoid(ag::add_scalar(log_alpha, -shift)));
}

std::vector<double> HardConcreteGates::values() const {
  NoGradGuard ng;
  return forward(nullptr).data().to_vector<double>();
}

}  // namespace lopper::pruning
