// Attention: scores, mask, softmax, weighted sum; GEMMs on strided head views.
#include "nn/attention.h"

#include <cmath>

#include "core/fused_attention.h"

namespace lopper::nn {

Variable scaled_dot_product_attention(const Variable& q, const Variable& k, const Variable& v,
                                      const Tensor& additive_mask, const Variable& prob_mask, double dropout_p,
                                      Generator* dropout_gen, const ProbHook& prob_hook) {
  LOPPER_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.shape() == q.shape(), "[attention] q ",
               shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()),
               " must all be (B, H, T, D)");
  double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // On the CPU, without a probability mask or hook: one fused pass per (example, head).
  // Inference: the ops below to rounding (bitwise beyond 64 tokens); training: bitwise the
  // ops below, gradients too, with no (B, H, T, T) tensor kept (core/fused_attention.h).
  bool fusable = !prob_mask.defined() && !prob_hook && q.data().device().is_cpu() && q.dtype() == DType::f32 &&
                 (!additive_mask.defined() || additive_mask.dtype() == DType::f32) && q.data().stride(3) == 1 &&
                 k.data().stride(3) == 1 && v.data().stride(3) == 1;
  bool no_grad = !q.requires_grad() && !k.requires_grad() && !v.requires_grad();
  if (fusable && no_grad && !dropout_gen)
    return Variable(fused_attention(q.data(), k.data(), v.data(), additive_mask, scale));
  if (fusable) return ag::fused_attention(q, k, v, additive_mask, scale, dropout_gen ? dropout_p : 0.0, dropout_gen);
  Variable scores = ag::scale(ag::matmul(q, k, false, true), scale);  // (B, H, T, T)
  if (additive_mask.defined()) scores = ag::add(scores, Variable(additive_mask));
  Variable probs = ag::softmax(scores);  // (B, H, T, T)
  if (prob_mask.defined()) probs = ag::mul(probs, prob_mask);
  if (prob_hook) {
    probs = prob_hook(probs, scores.data(), additive_mask);
    LOPPER_CHECK(probs.shape() == scores.shape(), "[attention] the probability hook returned ", shape_str(probs.shape()),
                 " for probabilities ", shape_str(scores.shape()));
  }
  if (dropout_gen) probs = ag::dropout(probs, dropout_p, true, *dropout_gen);
  return ag::matmul(probs, v);  // (B, H, T, D)
}

Variable split_heads(const Variable& x, int64_t heads) {
  int64_t b = x.size(0), t = x.size(1), c = x.size(2);
  LOPPER_CHECK(c % heads == 0, "[attention] width ", c, " not divisible by ", heads, " heads");
  return ag::permute(ag::reshape(x, {b, t, heads, c / heads}), {0, 2, 1, 3});
}

Variable merge_heads(const Variable& x) {
  int64_t b = x.size(0), h = x.size(1), t = x.size(2), d = x.size(3);
  return ag::reshape(ag::contiguous(ag::permute(x, {0, 2, 1, 3})), {b, t, h * d});
}

}  // namespace lopper::nn
