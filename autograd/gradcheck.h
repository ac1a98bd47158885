// Finite-difference gradient check, in double precision on the CPU.
// Compares the analytic gradient of L = sum(f(x) * v), for a fixed random v, with
// central differences (L(x + h) - L(x - h)) / 2h, element by element of every input.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace lopper {

struct GradcheckResult {
  bool ok = true;
  double max_error = 0.0;  // max over elements of |analytic - numeric| / max(1, |numeric|)
  std::string report;      // the worst element of each input, for failure messages
};

// `inputs` must be f64 CPU tensors; those with requires_grad are checked. The inputs may
// be non-contiguous views: they are perturbed in place through their strides.
GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Variable>& inputs, double h = 1e-6, double tol = 1e-6,
                          uint64_t seed = 1234);

}  // namespace lopper
