// Hard-Concrete gates (Louizos et al. 2018; used for heads by Voita et al. 2019): one
// learnable log_alpha per gate, stretched Hard-Concrete samples while training,
// deterministic gates at evaluation, and the expected-L0 penalty. Not wired to a model:
// the head_gates stage sets BertSelfAttention::head_mask from forward().
#pragma once
#include "core/rng.h"
#include "nn/module.h"

namespace lopper::pruning {

struct HardConcreteParams {
  double beta = 2.0 / 3.0;  // temperature (some implementations use 0.33)
  double gamma = -0.1;      // stretch interval [gamma, zeta]
  double zeta = 1.1;
};

class HardConcreteGates : public nn::Module {
 public:
  // init_log_alpha: large enough that gates start open (P(z > 0) ~ 1).
  HardConcreteGates(int64_t n, HardConcreteParams p = {}, double init_log_alpha = 3.0);

  // Training: z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (zeta - gamma) + gamma, 0, 1),
  // u ~ U(0, 1) from gen. Evaluation (gen null or eval mode): the same with the noise term
  // at its median (0) and temperature 1, as Louizos et al.: clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1).
  Variable forward(Generator* gen) const;  // (n)
  // sum_i sigmoid(log_alpha_i - beta log(-gamma / zeta)) = expected number of non-zero gates.
  Variable expected_l0() const;
  // The deterministic gate values as a host vector, for logs and removal decisions.
  std::vector<double> values() const;

  Variable log_alpha;  // (n)
  HardConcreteParams params;
};

}  // namespace lopper::pruning
