// Measuring, storing and fitting the per-layer latency table.
#include "pruning/latency.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "nn/bert.h"

namespace lopper::pruning {

namespace {
std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// Median ms of `repeats` calls of f after three warm-up calls.
template <class F>
double median_ms(F&& f, int64_t repeats) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

LatencyTable LatencyTable::load(const std::string& path) {
  std::ifstream f(path);
  LOPPER_CHECK(f.good(), "[latency table] cannot read ", path, " (make one with: latency_table MODEL_DIR --out ", path, ")");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
    LatencyTable t;
    t.batch = j.at("batch").get<int64_t>();
    t.seq_len = j.at("seq_len").get<int64_t>();
    t.hidden_size = j.at("hidden_size").get<int64_t>();
    t.head_dim = j.at("head_dim").get<int64_t>();
    t.threads = j.value("threads", int64_t{0});
    t.cpu = j.value("cpu", std::string());
    t.attention = j.at("attention_ms").get<std::vector<double>>();
    t.ffn = j.at("ffn_ms").get<std::vector<double>>();
    LOPPER_CHECK(t.attention.size() >= 2 && t.ffn.size() >= 2, "[latency table] ", path,
                 ": attention_ms and ffn_ms need an entry for 0 and at least one more count");
    for (const auto* v : {&t.attention, &t.ffn})
      for (double x : *v) LOPPER_CHECK(std::isfinite(x) && x >= 0, "[latency table] ", path, ": a latency of ", x, " ms");
    return t;
  } catch (const nlohmann::json::exception& e) {
    LOPPER_FAIL("[latency table] ", path, ": ", e.what());
  }
}

void LatencyTable::save(const std::string& path) const {
  nlohmann::json j = {{"batch", batch},     {"seq_len", seq_len}, {"hidden_size", hidden_size}, {"head_dim", head_dim},
                      {"threads", threads}, {"cpu", cpu},         {"attention_ms", attention},  {"ffn_ms", ffn}};
  std::ofstream f(path);
  LOPPER_CHECK(f.good(), "[latency table] cannot write ", path);
  f << j.dump(1) << "\n";
}

void LatencyTable::check(const nn::BertConfig& c, const std::string& path) const {
  LOPPER_CHECK(hidden_size == c.hidden_size && head_dim == c.head_dim(), "[latency table] ", path, " was measured for ",
               "hidden size ", hidden_size, " and head size ", head_dim, ", the model has ", c.hidden_size, " and ",
               c.head_dim());
  int64_t heads = *std::max_element(c.heads_per_layer.begin(), c.heads_per_layer.end());
  int64_t neurons = *std::max_element(c.intermediate_sizes.begin(), c.intermediate_sizes.end());
  LOPPER_CHECK(static_cast<int64_t>(attention.size()) > heads && static_cast<int64_t>(ffn.size()) > neurons,
               "[latency table] ", path, " covers ", attention.size() - 1, " heads and ", ffn.size() - 1,
               " neurons per layer, the model has up to ", heads, " and ", neurons);
}

LatencyTable measure_latency_table(const nn::BertConfig& c, int64_t batch, int64_t seq_len, int64_t ffn_step,
                                   int64_t repeats) {
  LOPPER_CHECK(batch > 0 && seq_len > 0 && ffn_step > 0 && repeats > 0, "[latency table] batch ", batch, ", seq_len ",
               seq_len, ", ffn_step ", ffn_step, ", repeats ", repeats, ": each must be > 0");
  NoGradGuard ng;
  Generator gen(0);
  LatencyTable t;
  t.batch = batch;
  t.seq_len = seq_len;
  t.hidden_size = c.hidden_size;
  t.head_dim = c.head_dim();
  t.threads = omp_get_max_threads();
  t.cpu = cpu_model();
  Variable x(normal({batch, seq_len, c.hidden_size}, 0, 1, gen));  // (B, T, C)
  t.attention.assign(1, 0.0);
  for (int64_t h = 1; h <= c.num_attention_heads; ++h) {
    nn::BertAttention block(c, h, gen);
    block.eval();
    t.attention.push_back(median_ms([&] { block.forward(x, Tensor(), {}); }, repeats));
    std::fprintf(stderr, "\rlatency table: attention %lld/%lld heads  ", static_cast<long long>(h),
                 static_cast<long long>(c.num_attention_heads));
  }
  std::vector<int64_t> counts;
  for (int64_t n = 1; n < c.intermediate_size; n += ffn_step) counts.push_back(n);
  counts.push_back(c.intermediate_size);
  std::vector<double> at;
  for (int64_t n : counts) {
    nn::BertIntermediate in(c, n, gen);
    nn::BertOutput out(c, n, gen);
    in.eval();
    out.eval();
    at.push_back(median_ms([&] { out.forward(in.forward(x), x, {}); }, repeats));
    std::fprintf(stderr, "\rlatency table: FFN %lld/%lld neurons  ", static_cast<long long>(n),
                 static_cast<long long>(c.intermediate_size));
  }
  std::fprintf(stderr, "\n");
  t.ffn.assign(1, 0.0);
  size_t i = 0;
  for (int64_t n = 1; n <= c.intermediate_size; ++n) {
    while (i + 1 < counts.size() && counts[i + 1] <= n) ++i;
    if (i + 1 == counts.size()) {  // n is the last measured count
      t.ffn.push_back(at[i]);
      continue;
    }
    double f = static_cast<double>(n - counts[i]) / static_cast<double>(counts[i + 1] - counts[i]);
    t.ffn.push_back(at[i] + (at[i + 1] - at[i]) * f);
  }
  return t;
}

double PiecewiseLinear::operator()(int64_t n) const {
  if (n <= 0) return 0;
  return n <= threshold ? c : c + slope * static_cast<double>(n - threshold);
}

PiecewiseLinear fit_latency(const std::vector<double>& lut) {
  const int64_t n = static_cast<int64_t>(lut.size()) - 1;  // counts 1..n
  LOPPER_CHECK(n >= 1, "[latency table] nothing to fit");
  PiecewiseLinear best;
  double best_err = -1;
  for (int64_t th = 1; th <= n; ++th) {
    PiecewiseLinear f;
    f.threshold = th;
    for (int64_t i = 1; i <= th; ++i) f.c += lut[i];
    f.c /= static_cast<double>(th);
    // slope by least squares through (th, c): sum x y / sum x^2 over x = i - th.
    double xy = 0, xx = 0;
    for (int64_t i = th + 1; i <= n; ++i) {
      double x = static_cast<double>(i - th);
      xy += x * (lut[i] - f.c);
      xx += x * x;
    }
    f.slope = xx > 0 ? std::max(0.0, xy / xx) : 0.0;
    double err = 0;
    for (int64_t i = 1; i <= n; ++i) err += (lut[i] - f(i)) * (lut[i] - f(i));
    if (best_err < 0 || err < best_err) {
      best_err = err;
      best = f;
    }
  }
  return best;
}

double table_latency(const LatencyTable& lut, const std::vector<int64_t>& heads, const std::vector<int64_t>& neurons) {
  double ms = 0;
  for (int64_t h : heads) ms += lut.attention.at(static_cast<size_t>(h));
  for (int64_t n : neurons) ms += lut.ffn.at(static_cast<size_t>(n));
  return ms;
}

}  // namespace lopper::pruning
