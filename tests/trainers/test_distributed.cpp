// Data parallelism over MPI, run by ctest as `mpirun -np 2 test_distributed`: the collectives'
// results, and the tiny BERT trained as 2 ranks x 8 examples against 1 process x 16 (each
// rank computes the single-process run itself, so one launch compares both).
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"
#include "nn/safetensors.h"
#include "trainers/trainer.h"

using namespace lopper;

namespace {
const std::string kTiny = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert";

// One per process: MPI cannot be initialized again after it is finalized.
trainers::Communicator& world() {
  static std::unique_ptr<trainers::Communicator> c = trainers::make_communicator();
  return *c;
}

std::unique_ptr<nn::BertForSequenceClassification> tiny_model(double dropout) {
  nn::BertConfig cfg = nn::BertConfig::from_file(kTiny + "/config.json");
  cfg.hidden_dropout_prob = dropout;
  cfg.attention_probs_dropout_prob = dropout;
  Generator init(0);
  auto model = std::make_unique<nn::BertForSequenceClassification>(cfg, init);
  nn::load_pretrained(*model, kTiny, true);
  return model;
}

// Step s's global batch: 16 sequences of 12 random ids (the last 3 of odd rows padded), binary labels.
data::Batch global_batch(int64_t s, int64_t vocab) {
  Generator g(100 + static_cast<uint64_t>(s));
  std::vector<int64_t> ids(16 * 12), mask(16 * 12, 1), labels(16);
  for (auto& v : ids) v = 1 + static_cast<int64_t>(g.next_below(static_cast<uint64_t>(vocab - 1)));
  for (int64_t r = 1; r < 16; r += 2)
    for (int64_t t = 9; t < 12; ++t) mask[r * 12 + t] = 0, ids[r * 12 + t] = 0;
  for (auto& v : labels) v = static_cast<int64_t>(g.next_below(2));
  return {Tensor::from_vector(ids, {16, 12}), Tensor::zeros({16, 12}, DType::i64), Tensor::from_vector(mask, {16, 12}),
          Tensor::from_vector(labels, {16}), 0};
}

data::Batch rows(const data::Batch& b, int64_t begin, int64_t end) {
  auto cut = [&](const Tensor& t) { return t.slice(0, begin, end).contiguous(); };
  return {cut(b.input_ids), cut(b.token_type_ids), cut(b.attention_mask), cut(b.labels), 0};
}

trainers::TrainerOptions options() {
  trainers::TrainerOptions o;
  o.lr = 1e-3;
  o.schedule = {nn::ScheduleKind::constant, 0, 1};
  o.max_grad_norm = 1.0;
  return o;
}

struct Trained {
  std::vector<double> losses;  // per step: the mean over ranks of each rank's loss
  std::vector<std::pair<std::string, Tensor>> weights;
};

// `steps` steps of the tiny model: as this rank's share of each global batch over `comm`.
Trained train(trainers::Communicator& comm, int64_t steps, double dropout) {
  auto model = tiny_model(dropout);
  // Rank 1 starts from other weights; the broadcast must replace them with rank 0's.
  if (comm.rank() != 0)
    for (auto& [n, p] : model->named_parameters()) Tensor(p.data()).fill_(0.5);
  std::vector<Tensor> params;
  for (auto& [n, p] : model->named_parameters()) params.push_back(p.data());
  trainers::broadcast_tensors(comm, params);
  Generator gen(7 + 1000 * static_cast<uint64_t>(comm.rank()));  // dropout stream per (seed, rank)
  trainers::Trainer trainer(*model, {}, nullptr, comm, gen, options());
  Trained out;
  const int64_t per_rank = 16 / comm.size();
  for (int64_t s = 0; s < steps; ++s) {
    data::Batch b = rows(global_batch(s, model->config().vocab_size), comm.rank() * per_rank, (comm.rank() + 1) * per_rank);
    trainers::StepStats st = trainer.step({b}, s, steps);
    Tensor loss = Tensor::full({1}, st.loss, DType::f64);
    comm.all_reduce(loss, trainers::Reduce::mean);
    out.losses.push_back(loss.item<double>());
  }
  for (auto& [n, p] : model->named_parameters()) out.weights.emplace_back(n, p.data().clone());
  return out;
}
}  // namespace

TEST(Distributed, CollectivesGiveTheirDefinitions) {
  trainers::Communicator& c = world();
  if (c.size() == 1) GTEST_SKIP() << "run under mpirun -np 2 (ctest does)";
  ASSERT_EQ(c.size(), 2);
  EXPECT_EQ(c.name(), "mpi");
  Tensor t = Tensor::from_vector<float>({1.0f + c.rank(), 10.0f * (c.rank() + 1)}, {2});
  c.all_reduce(t, trainers::Reduce::sum);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{3, 30}));
  c.all_reduce(t, trainers::Reduce::mean);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{3, 30}));
  Tensor g = c.all_gather(Tensor::full({1, 3}, c.rank(), DType::i64));
  EXPECT_EQ(g.shape(), (Shape{2, 3}));
  EXPECT_EQ(g.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
  Tensor b = Tensor::full({4}, c.rank() == 0 ? 2.5 : -1.0);
  c.broadcast(b, 0);
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>(4, 2.5f)));
  c.barrier();
}

// 2 ranks x 8 examples against 1 process x 16, dropout off: the same loss at every step and
// the same weights after 5 AdamW steps. Not bitwise: each rank sums its own 8 examples and
// the all-reduce adds the two halves, where one process sums 16 in another order; 1e-5
// relative is float32's rounding over these sums, far below what one step changes (lr 1e-3).
// The attention key biases are left out of the weight comparison: their exact gradient is
// zero (a key bias adds the same q . b to every score of a query, which the softmax
// ignores), so what they get is rounding noise, and AdamW, dividing by that noise's own
// size, turns it into steps of about lr whose sign depends on the summation order.
TEST(Distributed, TwoRanksTrainAsOneProcessWithTheWholeBatch) {
  trainers::Communicator& c = world();
  if (c.size() == 1) GTEST_SKIP() << "run under mpirun -np 2 (ctest does)";
  trainers::SingleProcess one;
  Trained dp = train(c, 5, 0.0), ref = train(one, 5, 0.0);
  for (size_t s = 0; s < ref.losses.size(); ++s)
    EXPECT_NEAR(dp.losses[s], ref.losses[s], 1e-5 * std::fabs(ref.losses[s])) << "step " << s;
  double largest = 0;
  for (size_t i = 0; i < ref.weights.size(); ++i) {
    if (ref.weights[i].first.ends_with("attention.self.key.bias")) continue;
    double d = max_abs_diff(dp.weights[i].second, ref.weights[i].second);
    largest = std::max(largest, d);
    EXPECT_LT(d, 1e-5) << ref.weights[i].first;
  }
  std::printf("rank %d: largest weight difference after 5 steps %.3g\n", c.rank(), largest);
}

TEST(Distributed, TwoRankRunsWithDropoutAreBitwiseEqual) {
  trainers::Communicator& c = world();
  if (c.size() == 1) GTEST_SKIP() << "run under mpirun -np 2 (ctest does)";
  Trained a = train(c, 3, 0.1), b = train(c, 3, 0.1);
  EXPECT_EQ(a.losses, b.losses);
  for (size_t i = 0; i < a.weights.size(); ++i)
    EXPECT_EQ(max_abs_diff(a.weights[i].second, b.weights[i].second), 0.0) << a.weights[i].first;
}
