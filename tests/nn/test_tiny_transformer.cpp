// End to end: a 2-layer encoder built from Lopper's parts learns to sort digit sequences,
// and 1,000 training steps leave the allocator's live bytes where they were.
#include <gtest/gtest.h>

#include "nn/losses.h"
#include "nn/optim.h"
#include "nn/tiny_encoder.h"

using namespace lopper;

namespace {
constexpr int64_t kVocab = 10, kSeq = 8;

double train_step(nn::TinyEncoder& model, nn::Optimizer& opt, const nn::LrSchedule& sched, Generator& data) {
  auto [x, y] = nn::sort_digits_batch(64, kSeq, kVocab, data);
  Variable logits = model.forward(x);
  Variable loss = nn::cross_entropy(ag::reshape(logits, {-1, kVocab}), y);
  opt.zero_grad();
  loss.backward();
  nn::clip_grad_norm(model.parameters(), 1.0);
  opt.step(sched.factor(opt.steps()));
  return loss.data().item<double>();
}
}  // namespace

TEST(TinyTransformer, LearnsToSortDigits) {
  Generator init(1), data(2);
  nn::TinyEncoder model(kVocab, kSeq, 64, 4, 2, init);
  nn::AdamW opt(nn::decay_groups(model.named_parameters(), 3e-3, 0.01));
  const int64_t steps = 600;
  nn::LrSchedule sched{nn::ScheduleKind::cosine, 100, steps};
  double first = 0, last = 0;
  for (int64_t s = 0; s < steps; ++s) {
    double l = train_step(model, opt, sched, data);
    if (s == 0) first = l;
    last = l;
  }
  EXPECT_LT(last, 0.1 * first);

  model.eval();
  NoGradGuard ng;
  Generator test_data(99);
  auto [x, y] = nn::sort_digits_batch(1000, kSeq, kVocab, test_data);
  Tensor pred = argmax(model.forward(x).data(), -1).reshape({-1});
  auto pv = pred.to_vector<int64_t>(), yv = y.to_vector<int64_t>();
  int64_t correct = 0;
  for (size_t i = 0; i < pv.size(); ++i) correct += pv[i] == yv[i];
  double acc = static_cast<double>(correct) / pv.size();
  std::printf("tiny encoder sort: loss %.4f -> %.4f, token accuracy %.4f\n", first, last, acc);
  EXPECT_GT(acc, 0.99);
}

TEST(TinyTransformer, NoMemoryGrowthOver1000Steps) {
  Generator init(3), data(4);
  nn::TinyEncoder model(kVocab, kSeq, 32, 4, 2, init);
  nn::AdamW opt(nn::decay_groups(model.named_parameters(), 1e-3, 0.01));
  nn::LrSchedule sched{nn::ScheduleKind::linear, 10, 1000};
  Allocator& a = cpu_allocator();
  // After the first steps every gradient and optimizer moment exists; from then on each
  // step must free all it allocates.
  for (int s = 0; s < 10; ++s) train_step(model, opt, sched, data);
  int64_t live_after_warmup = a.stats().bytes_in_use;
  a.reset_peak();
  int64_t peak_after_warmup = 0;
  for (int s = 10; s < 1000; ++s) {
    train_step(model, opt, sched, data);
    if (s == 20) peak_after_warmup = a.stats().peak_bytes;
  }
  EXPECT_EQ(a.stats().bytes_in_use, live_after_warmup);
  EXPECT_EQ(a.stats().peak_bytes, peak_after_warmup);
  std::printf("live bytes after step 10: %lld, after step 1000: %lld; peak %lld\n",
              static_cast<long long>(live_after_warmup), static_cast<long long>(a.stats().bytes_in_use),
              static_cast<long long>(a.stats().peak_bytes));
}
