// Measurements of the model as it is (parameters, heads, FLOPs, latency) and summary.json.
#include <omp.h>

#include <algorithm>
#include <numeric>
#include <optional>

#include "core/ops.h"
#include "nn/block_sparse.h"
#include "pruning/compact.h"
#include "trainers/metrics.h"
#include "trainers/run.h"

namespace lopper::trainers {

using json = nlohmann::json;

namespace {
int64_t total_heads(const nn::BertConfig& c) {
  return std::accumulate(c.heads_per_layer.begin(), c.heads_per_layer.end(), int64_t{0});
}
}  // namespace

// Median wall time of a forward pass on dummy ids, in ms: two warm-up passes, then at
// least 5 and up to 50 timed ones, stopping after a second.
double Run::forward_latency_ms(int64_t batch, int64_t seq) {
  NoGradGuard ng;
  model_->eval();
  Tensor ids = Tensor::full({batch, seq}, static_cast<double>(tokenizer_->cls_id()), DType::i64, device_);
  Tensor mask = Tensor::ones({batch, seq}, DType::i64, device_);
  std::vector<double> ms;
  double spent = 0;
  for (int i = 0; i < 52 && (i < 7 || spent < 1000); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model_->forward(ids, Tensor(), mask).data().to_vector<float>();  // to the host: waits for the device
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 2) {
      ms.push_back(t);
      spent += t;
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double Run::elapsed_seconds() const {
  return wall_base_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

json timing_report(const json& t) {
  double n = t["steps"].get<double>(), sec = t["seconds"].get<double>(), comm = t["allreduce_seconds"].get<double>();
  return {{"kind", t["kind"]}, {"steps", t["steps"]}, {"ms_per_step", n > 0 ? 1e3 * sec / n : 0.0},
          {"allreduce_ms_per_step", n > 0 ? 1e3 * comm / n : 0.0}, {"allreduce_share", sec > 0 ? comm / sec : 0.0}};
}

json Run::measure() {
  json m = {{"parameters", model_->num_parameters()}};
  m["heads"] = total_heads(model_->config());
  if (!dev_) return m;
  int64_t avg = data::mean_length(*dev_);
  auto f = pruning::bert_flops(model_->config(), avg);
  json layers = json::array();
  for (auto& l : f) layers.push_back({{"attention", l.attention}, {"ffn", l.ffn}});
  m["flops"] = {{"seq_len", avg}, {"total", pruning::total_flops(f)}, {"per_layer", layers}};
  auto latency = [&] {
    return json{{"seq_len", avg}, {"batch_1", forward_latency_ms(1, avg)}, {"batch_32", forward_latency_ms(32, avg)}};
  };
  // Inference as it runs on the CPU: sparse Linears in block-sparse form, dense ones packed
  // in panels or for short inputs (block_sparse.dense_panels, dense_max_rows). With sparse
  // layers, their latency, then the dense model's under a scope that packs every Linear
  // dense; without, the one scope.
  std::optional<nn::BlockSparseScope> scope;
  if (device_.is_cpu()) scope.emplace(*model_, e_.block_sparse);
  if (scope && scope->sparse_count() > 0) {
    json sparse = json::object();
    for (const auto& l : scope->layers())
      if (!l.dense) sparse[l.name] = {{"block", {l.block_rows, l.block_cols}}, {"density", l.density}};
    m["block_sparse"] = {{"summary", scope->describe()}, {"layers", sparse}, {"latency_ms", latency()}};
    scope.reset();
    nn::BlockSparseOptions dense_only = e_.block_sparse;
    dense_only.max_density = 0.0;
    scope.emplace(*model_, dense_only);
  }
  m["latency_ms"] = latency();
  return m;
}

void Run::write_summary() {
  if (!writer()) return;
  json s;
  s["name"] = e_.name;
  s["final_eval"] = state_.last_eval;
  s["best"] = {{"metric", main_metric(e_.data.task, regression_)}, {"value", state_.best}, {"step", state_.best_step}};
  const nn::BertConfig& c = model_->config();
  s["heads_per_layer"] = c.heads_per_layer;
  s["intermediate_sizes"] = c.intermediate_sizes;
  json now = measure();
  for (auto& [k, v] : now.items()) s[k] = v;
  if (state_.pruning.contains("before")) {
    json p = state_.pruning;
    p["heads_total"] = c.num_attention_heads * c.num_hidden_layers;
    p["heads_kept"] = now["heads"];
    p["after"] = now;
    if (now.contains("latency_ms")) {
      const json &b = p["before"]["latency_ms"], &a = now["latency_ms"];
      p["speedup"] = {{"batch_1", b["batch_1"].get<double>() / a["batch_1"].get<double>()},
                      {"batch_32", b["batch_32"].get<double>() / a["batch_32"].get<double>()},
                      {"flops", p["before"]["flops"]["total"].get<double>() / now["flops"]["total"].get<double>()}};
    }
    s["pruning"] = p;
  }
  // The attention rule, and dev accuracy and realized sparsity per layer and head (at the
  // task's real lengths) with it before and after fine-tuning.
  if (state_.pruning.contains("attention_prune")) s["attention_pruning"] = state_.pruning["attention_prune"];
  if (!state_.sparsity.is_null()) {  // the held pattern, checked on the weights as they are now
    json sp = state_.sparsity;
    pruning::NmPattern p = pruning::pattern_from_json(sp);
    int64_t violating = 0, nonzero = 0;
    for (auto& [name, v] : model_->named_parameters())
      if (auto it = held_.find(name); it != held_.end()) {
        violating += pruning::nm_violations(v.data(), p);
        Tensor moved = mul(v.data(), sub(Tensor::scalar(1.0, v.dtype(), v.device()), it->second.to(v.dtype())));
        nonzero += static_cast<int64_t>(sum_all(ne(moved, Tensor::scalar(0.0, v.dtype(), v.device())).to(DType::f64))
                                            .item<double>());
      }
    sp["groups_violating"] = violating;
    sp["held_weights_nonzero"] = nonzero;
    sp["nm_prune"] = state_.pruning.value("nm_prune", json());
    s["sparsity"] = sp;
  }
  s["train_examples"] = train_ ? train_->size() : 0;
  s["dev_examples"] = dev_ ? dev_->size() : 0;
  s["wall_seconds"] = elapsed_seconds();
  json timing = json::array();  // per training stage: where its time went
  for (auto& [stage, t] : state_.timing.items()) {
    json r = timing_report(t);
    r["stage"] = std::stoll(stage);
    timing.push_back(r);
  }
  std::sort(timing.begin(), timing.end(), [](const json& a, const json& b) { return a["stage"] < b["stage"]; });
  s["timing"] = timing;
  s["threads"] = omp_get_max_threads();
  s["world_size"] = comm_->size();
  s["device"] = device_.str();
  write_atomic(out_ / "summary.json", s.dump(2) + "\n");
  std::fprintf(stderr, "summary: %s\n", (out_ / "summary.json").string().c_str());
}

}  // namespace lopper::trainers
