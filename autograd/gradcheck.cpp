// gradcheck: analytic versus central finite differences.
#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "core/ops.h"

namespace lopper {

namespace {
// Offset in elements of linear index i in t's logical (row-major) order.
int64_t strided_offset(const Tensor& t, int64_t i) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (i % t.size(d)) * t.stride(d);
    i /= t.size(d);
  }
  return off;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Variable>& inputs, double h, double tol, uint64_t seed) {
  for (const Variable& v : inputs)
    LOPPER_CHECK(v.dtype() == DType::f64 && v.device().is_cpu(), "[gradcheck] inputs must be f64 on the CPU");
  Generator gen(seed);
  GradcheckResult res;
  // Analytic.
  for (const Variable& v : inputs) v.zero_grad();
  Variable y = f(inputs);
  Tensor probe = normal(y.shape(), 0.0, 1.0, gen, DType::f64);
  Variable weighted = make_result(sum_all(mul(y.data(), probe)), {y}, "gradcheck_probe",
                                  [p = probe](const Tensor& gy) -> std::vector<Tensor> {
                                    return {mul(gy.expand(p.shape()), p)};
                                  });
  weighted.backward();
  auto scalar_loss = [&]() {
    NoGradGuard ng;
    return sum_all(mul(f(inputs).data(), probe)).item<double>();
  };
  std::ostringstream report;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Variable& v = inputs[k];
    if (!v.requires_grad()) continue;
    Tensor x = v.data();
    LOPPER_CHECK(v.grad().defined(), "[gradcheck] input ", k, " got no gradient");
    std::vector<double> analytic = v.grad().to_vector<double>();
    double* base = x.data<double>();
    double worst = 0;
    int64_t worst_i = -1;
    double worst_a = 0, worst_n = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      double* p = base + strided_offset(x, i);
      double orig = *p;
      *p = orig + h;
      double lp = scalar_loss();
      *p = orig - h;
      double lm = scalar_loss();
      *p = orig;
      double numeric = (lp - lm) / (2 * h);
      double err = std::fabs(analytic[i] - numeric) / std::max(1.0, std::fabs(numeric));
      if (err > worst) { worst = err; worst_i = i; worst_a = analytic[i]; worst_n = numeric; }
    }
    res.max_error = std::max(res.max_error, worst);
    if (worst > tol) {
      res.ok = false;
      report << "input " << k << " " << shape_str(x.shape()) << ": element " << worst_i << " analytic "
             << worst_a << " numeric " << worst_n << " (error " << worst << ")\n";
    }
  }
  res.report = report.str();
  return res;
}

}  // namespace lopper
