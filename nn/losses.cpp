// Loss functions.
#include "nn/losses.h"

#include <cmath>

namespace lopper::nn {

Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index, double smoothing) {
  LOPPER_CHECK(logits.dim() == 2, "[cross_entropy] logits must be (N, C), got ", shape_str(logits.shape()));
  int64_t n = logits.size(0), c = logits.size(1);
  LOPPER_CHECK(targets.shape() == Shape{n}, "[cross_entropy] targets ", shape_str(targets.shape()),
               " for logits ", shape_str(logits.shape()));
  LOPPER_CHECK(smoothing >= 0 && smoothing <= 1, "[cross_entropy] label_smoothing ", smoothing, " outside [0, 1]");
  // Per-row weights 1/count for kept rows, 0 for ignored ones; ignored targets read class 0.
  std::vector<int64_t> t = targets.to_vector<int64_t>();
  std::vector<double> w(n, 0.0);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) { t[i] = 0; continue; }
    LOPPER_CHECK(t[i] >= 0 && t[i] < c, "[cross_entropy] target ", t[i], " at row ", i, " outside [0, ", c, ")");
    w[i] = 1.0;
    ++kept;
  }
  for (double& v : w) v = kept ? v / static_cast<double>(kept) : 0.0;
  Device d = logits.device();
  Tensor safe = Tensor::from_vector(t, {n, 1}, d);
  Variable weights(Tensor::from_vector(w, {n}).to(logits.dtype()).to(d));
  Variable lp = ag::log_softmax(logits);
  Variable per_row = ag::reshape(ag::gather(lp, 1, safe), {n});
  if (smoothing > 0) {
    per_row = ag::add(ag::scale(per_row, 1.0 - smoothing), ag::scale(ag::mean(lp, 1), smoothing));
  }
  return ag::neg(ag::sum_all(ag::mul(per_row, weights)));
}

Variable mse(const Variable& a, const Variable& b) {
  LOPPER_CHECK(a.shape() == b.shape(), "[mse] ", shape_str(a.shape()), " vs ", shape_str(b.shape()));
  return ag::mean_all(ag::square(ag::sub(a, b)));
}

Variable kl_div_distill(const Variable& student, const Tensor& teacher, double temperature) {
  LOPPER_CHECK(student.shape() == teacher.shape(), "[kl_div] student ", shape_str(student.shape()),
               " vs teacher ", shape_str(teacher.shape()));
  LOPPER_CHECK(temperature > 0, "[kl_div] temperature must be > 0, got ", temperature);
  int64_t rows = student.numel() / student.size(-1);
  Tensor t_log = log_softmax(scale(teacher, 1.0 / temperature));
  Tensor t_prob = exp(t_log);
  Variable s_log = ag::log_softmax(ag::scale(student, 1.0 / temperature));
  // sum p_t (log p_t - log p_s) = const - sum p_t log p_s; the constant keeps the value a true KL.
  double entropy_term = sum_all(mul(t_prob, t_log)).item<double>();
  Variable cross = ag::sum_all(ag::mul(Variable(t_prob), s_log));
  Variable kl = ag::add_scalar(ag::neg(cross), entropy_term);
  return ag::scale(kl, temperature * temperature / static_cast<double>(rows));
}

}  // namespace lopper::nn
