// Losses: cross-entropy (ignore index, label smoothing), MSE, and the distillation KL
// with temperature. Each is a composition of autograd functions, so each is
// gradient-checked through its parts and as a whole.
#pragma once
#include "autograd/functions.h"

namespace lopper::nn {

inline constexpr int64_t kIgnoreIndex = -100;

// logits (N, C), targets (N) i64: mean over targets != ignore_index of
// (1 - s) * nll + s * mean_c(-log p_c), as torch.nn.functional.cross_entropy.
Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index = kIgnoreIndex,
                       double label_smoothing = 0.0);

// mean((a - b)^2) over all elements.
Variable mse(const Variable& a, const Variable& b);

// T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes and averaged
// over rows (Hinton et al.; 'batchmean' in PyTorch). student (N, C) variable, teacher
// (N, C) tensor (no gradient).
Variable kl_div_distill(const Variable& student, const Tensor& teacher, double temperature);

}  // namespace lopper::nn
