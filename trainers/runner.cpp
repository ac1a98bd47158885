// The stage runner: setup, the training step, evaluation, checkpoints, export.
#include "trainers/runner.h"

#include <omp.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/ops.h"
#include "core/version.h"
#include "data/dataset.h"
#include "nn/bert.h"
#include "nn/losses.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "pruning/compact.h"
#include "trainers/metrics.h"
#include "trainers/progress.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void write_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    LOPPER_CHECK(f.good(), "cannot write '", tmp.string(), "'");
    f << text;
    f.flush();
    LOPPER_CHECK(f.good(), "write to '", tmp.string(), "' failed (disk full?)");
  }
  fs::rename(tmp, path);
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  LOPPER_CHECK(f.good(), "cannot read '", p.string(), "'");
  return json::parse(f);
}

// Where the run is: restored from a checkpoint on --resume.
struct RunState {
  int64_t stage = 0;           // index of the stage in progress
  int64_t step = 0;            // optimizer steps done in this stage
  int64_t epoch = 0;           // epoch in progress
  int64_t batch_in_epoch = 0;  // batches of that epoch already consumed
  uint64_t dropout_offset = 0;
  double best = -1e300;
  int64_t best_step = -1;
  json last_eval;
};

json state_json(const RunState& s) {
  return {{"stage", s.stage}, {"step", s.step}, {"epoch", s.epoch}, {"batch_in_epoch", s.batch_in_epoch},
          {"dropout_offset", s.dropout_offset}, {"best", s.best}, {"best_step", s.best_step}, {"last_eval", s.last_eval}};
}

RunState state_from(const json& j) {
  RunState s;
  s.stage = j.at("stage");
  s.step = j.at("step");
  s.epoch = j.at("epoch");
  s.batch_in_epoch = j.at("batch_in_epoch");
  s.dropout_offset = j.at("dropout_offset");
  s.best = j.at("best");
  s.best_step = j.at("best_step");
  s.last_eval = j.at("last_eval");
  return s;
}

class Run {
 public:
  Run(const Experiment& e, const RunOptions& o) : e_(e), o_(o), out_(e.output_dir), dropout_gen_(e.seed ^ 0x5eedull) {}

  void execute() {
    load_inputs();  // every input is read and checked before anything is written
    prepare_output();
    setup();
    for (int64_t i = state_.stage; i < static_cast<int64_t>(e_.stages.size()); ++i) {
      state_.stage = i;
      const StageSpec& s = e_.stages[i];
      std::fprintf(stderr, "== stage %lld: %s\n", static_cast<long long>(i), s.kind.c_str());
      if (s.kind == "finetune") finetune(s);
      else if (s.kind == "evaluate") evaluate_stage(s);
      else export_model();
      // A finished stage is a checkpoint: a resumed run starts at the next one.
      RunState next;
      next.stage = i + 1;
      next.dropout_offset = dropout_gen_.offset();
      next.best = state_.best;
      next.best_step = state_.best_step;
      next.last_eval = state_.last_eval;
      state_ = next;
      save_checkpoint(nullptr);
    }
    write_summary();
  }

 private:
  // ---- setup ----

  void prepare_output() {
    fs::path latest = out_ / "checkpoints" / "LATEST";
    if (o_.resume) {
      LOPPER_CHECK(fs::exists(latest), "--resume: no checkpoint in '", out_.string(), "' (nothing to resume)");
    } else if (fs::exists(latest) || fs::exists(out_ / "summary.json")) {
      LOPPER_CHECK(o_.overwrite, "output_dir '", out_.string(), "' holds a previous run: pass --resume to continue it, ",
                   "--overwrite to replace it, or choose another output_dir");
      for (const char* p : {"checkpoints", "best", "model", "metrics.jsonl", "summary.json", "config.resolved.json"})
        fs::remove_all(out_ / p);
    }
    std::error_code ec;
    fs::create_directories(out_ / "checkpoints", ec);
    LOPPER_CHECK(!ec, "output_dir '", out_.string(), "' cannot be created: ", ec.message());
    fs::path probe = out_ / ".write_test";
    {
      std::ofstream f(probe);
      LOPPER_CHECK(f.good(), "output_dir '", out_.string(), "' is not writable");
    }
    fs::remove(probe);
  }

  void load_inputs() {
    if (e_.threads > 0) omp_set_num_threads(static_cast<int>(e_.threads));
    spec_ = e_.data.task == "custom" ? data::TaskSpec{} : data::TaskSpec::glue(e_.data.task);
    spec_.format = e_.data.format;
    spec_.header = e_.data.header;
    if (!e_.data.text.empty()) spec_.text = e_.data.text;
    if (!e_.data.text_pair.empty()) spec_.text_pair = e_.data.text_pair;
    if (!e_.data.label.empty()) spec_.label = e_.data.label;
    if (!e_.data.label_type.empty()) spec_.label_type = e_.data.label_type;
    if (!e_.data.label_names.empty()) spec_.label_names = e_.data.label_names;
    if (spec_.label_type == "string") spec_.num_labels = static_cast<int64_t>(spec_.label_names.size());
    if (spec_.label_type == "float") spec_.num_labels = 1;
    if (e_.model.num_labels > 0) spec_.num_labels = e_.model.num_labels;
    regression_ = spec_.num_labels == 1;
    tokenizer_ = data::load_tokenizer(e_.model.path);
    if (!e_.data.train.empty()) {
      auto ex = data::read_examples(e_.data.train, spec_, e_.data.max_train_examples);
      train_ = std::make_unique<data::Dataset>(ex, *tokenizer_, e_.data.max_seq_len, regression_);
    }
    if (!e_.data.dev.empty()) {
      auto ex = data::read_examples(e_.data.dev, spec_, e_.data.max_eval_examples);
      dev_ = std::make_unique<data::Dataset>(ex, *tokenizer_, e_.data.max_seq_len, regression_);
    }
    cfg_ = nn::BertConfig::from_file((fs::path(e_.model.path) / "config.json").string());
    cfg_.num_labels = spec_.num_labels;
  }

  void setup() {
    Generator init(e_.seed);
    model_ = std::make_unique<nn::BertForSequenceClassification>(cfg_, init);
    nn::LoadReport rep = nn::load_pretrained(*model_, e_.model.path, true);
    if (!rep.missing.empty() || !rep.unexpected.empty())
      std::fprintf(stderr, "loading %s: %s(newly initialized weights are expected for a new task head)\n",
                   e_.model.path.c_str(), rep.str().c_str());

    json resolved = e_.resolved;
    resolved["lopper"] = {{"version", version()}, {"git_commit", git_commit()}, {"libraries", library_versions()},
                          {"threads", omp_get_max_threads()}};
    write_atomic(out_ / "config.resolved.json", resolved.dump(2) + "\n");

    if (o_.resume) {
      std::string name;
      std::ifstream(out_ / "checkpoints" / "LATEST") >> name;
      fs::path dir = out_ / "checkpoints" / name;
      state_ = state_from(read_json(dir / "state.json"));
      model_->load_state_dict(nn::load_safetensors((dir / "model.safetensors").string()).tensors);
      if (fs::exists(dir / "optimizer.safetensors")) resume_optimizer_ = dir / "optimizer.safetensors";
      dropout_gen_.set_state(dropout_gen_.seed(), state_.dropout_offset);
      trim_metrics();
      std::fprintf(stderr, "resuming from %s: stage %lld, step %lld\n", dir.string().c_str(),
                   static_cast<long long>(state_.stage), static_cast<long long>(state_.step));
    }
  }

  // ---- finetune ----

  void finetune(const StageSpec& s) {
    LOPPER_CHECK(train_ && dev_, "[finetune] needs data.train and data.dev");
    int64_t batches_per_epoch = (train_->size() + s.batch_size - 1) / s.batch_size;
    int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / s.grad_accum);
    int64_t total = s.max_steps > 0 ? s.max_steps : static_cast<int64_t>(std::ceil(s.epochs * steps_per_epoch));
    int64_t eval_every = s.eval_every > 0 ? s.eval_every : steps_per_epoch;
    int64_t ckpt_every = s.checkpoint_every > 0 ? s.checkpoint_every : eval_every;
    nn::AdamW opt(nn::decay_groups(model_->named_parameters(), s.lr, s.weight_decay));
    if (!resume_optimizer_.empty()) {
      opt.load_state_dict(nn::load_safetensors(resume_optimizer_.string()).tensors);
      resume_optimizer_.clear();
    }
    nn::LrSchedule sched{nn::schedule_from_name(s.schedule), static_cast<int64_t>(s.warmup_ratio * total), total};
    std::fprintf(stderr, "finetune: %lld examples, %lld steps (%lld per epoch), batch %lld x %lld, lr %.2e, %d threads\n",
                 static_cast<long long>(train_->size()), static_cast<long long>(total),
                 static_cast<long long>(steps_per_epoch), static_cast<long long>(s.batch_size),
                 static_cast<long long>(s.grad_accum), s.lr, omp_get_max_threads());
    Progress progress("finetune", total, s.log_every);
    nn::ForwardContext ctx{&dropout_gen_};
    while (state_.step < total) {
      auto batches = data::epoch_batches(*train_, s.batch_size, true, e_.seed, state_.epoch);
      while (state_.step < total && state_.batch_in_epoch + s.grad_accum <= static_cast<int64_t>(batches.size())) {
        // ---- one optimizer step: grad_accum micro-batches, clip, update ----
        model_->train();
        opt.zero_grad();
        double loss_sum = 0;
        int64_t examples = 0;
        for (int64_t a = 0; a < s.grad_accum; ++a) {
          data::Batch b = train_->collate(batches[state_.batch_in_epoch++]);
          Variable logits = model_->forward(b.input_ids, b.token_type_ids, b.attention_mask, ctx);
          Variable loss = regression_ ? model_->loss(logits, b.labels)
                                      : nn::cross_entropy(logits, b.labels, nn::kIgnoreIndex, s.label_smoothing);
          ag::scale(loss, 1.0 / static_cast<double>(s.grad_accum)).backward();
          loss_sum += loss.data().item<double>();
          examples += b.input_ids.size(0);
        }
        if (s.max_grad_norm > 0) nn::clip_grad_norm(model_->parameters(), s.max_grad_norm);
        double lr = s.lr * sched.factor(opt.steps());
        opt.step(sched.factor(opt.steps()));
        ++state_.step;
        // ---- bookkeeping ----
        double loss = loss_sum / static_cast<double>(s.grad_accum);
        progress.update(state_.step, loss, lr, examples);
        if (state_.step % s.log_every == 0 || state_.step == total)
          log_metrics({{"stage", state_.stage}, {"step", state_.step}, {"epoch", state_.epoch}, {"loss", loss}, {"lr", lr}});
        bool at_end = state_.step == total;
        if (state_.step % eval_every == 0 || at_end) {
          json m = evaluate(s.eval_batch_size);
          progress.note("eval at step " + std::to_string(state_.step) + ": " + m.dump());
          double score = m.at(main_metric(e_.data.task, regression_));
          if (score > state_.best) {
            state_.best = score;
            state_.best_step = state_.step;
            save_best();
          }
        }
        dropout_offset_sync();
        if (state_.step % ckpt_every == 0 || at_end) save_checkpoint(&opt);
        if (o_.kill_after_step == state_.step) ::raise(SIGKILL);
      }
      if (state_.step < total) {
        ++state_.epoch;
        state_.batch_in_epoch = 0;
      }
    }
    progress.finish();
    if (s.load_best && state_.best_step > 0 && state_.best_step != state_.step) {
      model_->load_state_dict(nn::load_safetensors((out_ / "best" / "model.safetensors").string()).tensors);
      std::fprintf(stderr, "finetune: loaded the best checkpoint (step %lld, %s %.4f)\n",
                   static_cast<long long>(state_.best_step), main_metric(e_.data.task, regression_).c_str(), state_.best);
      state_.last_eval = evaluate(s.eval_batch_size, false);
    }
  }

  void dropout_offset_sync() { state_.dropout_offset = dropout_gen_.offset(); }

  // ---- evaluation ----

  json evaluate(int64_t batch_size, bool log = true, std::vector<std::vector<float>>* logits_out = nullptr) {
    LOPPER_CHECK(dev_ != nullptr, "[evaluate] needs data.dev");
    NoGradGuard ng;
    model_->eval();
    std::vector<double> pred, label;
    for (auto& idx : data::epoch_batches(*dev_, batch_size, false, 0, 0)) {
      data::Batch b = dev_->collate(idx);
      Tensor logits = model_->forward(b.input_ids, b.token_type_ids, b.attention_mask).data();
      if (logits_out) {
        auto flat = logits.to_vector<float>();
        int64_t c = logits.size(1);
        for (int64_t r = 0; r < logits.size(0); ++r) logits_out->emplace_back(flat.begin() + r * c, flat.begin() + (r + 1) * c);
      }
      auto v = regression_ ? logits.reshape({-1}).to_vector<double>() : argmax(logits, -1).to_vector<double>();
      pred.insert(pred.end(), v.begin(), v.end());
    }
    for (float l : dev_->labels()) label.push_back(l);
    json m = task_metrics(e_.data.task, pred, label, regression_);
    m["examples"] = dev_->size();
    state_.last_eval = m;
    if (log) log_metrics({{"stage", state_.stage}, {"step", state_.step}, {"eval", m}});
    return m;
  }

  void evaluate_stage(const StageSpec& s) {
    std::vector<std::vector<float>> logits;
    json m = evaluate(s.eval_batch_size, true, s.write_predictions ? &logits : nullptr);
    std::fprintf(stderr, "evaluate: %s\n", m.dump().c_str());
    if (s.write_predictions) {
      std::string text;
      for (size_t i = 0; i < logits.size(); ++i) {
        auto& l = logits[i];
        int64_t pred = std::max_element(l.begin(), l.end()) - l.begin();
        text += json{{"index", i}, {"logits", l}, {"prediction", regression_ ? json(l[0]) : json(pred)},
                     {"label", dev_->labels()[i]}}.dump() + "\n";
      }
      write_atomic(out_ / "predictions.jsonl", text);
    }
  }

  // ---- files ----

  void log_metrics(const json& j) {
    std::ofstream f(out_ / "metrics.jsonl", std::ios::app);
    f << j.dump() << "\n";
  }

  // On resume, drop log lines written after the checkpoint (they will be written again).
  void trim_metrics() {
    fs::path p = out_ / "metrics.jsonl";
    if (!fs::exists(p)) return;
    std::ifstream in(p);
    std::string line, kept;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;  // a line cut by the kill
      int64_t st = j.value("stage", 0), sp = j.value("step", 0);
      if (st < state_.stage || (st == state_.stage && sp <= state_.step)) kept += line + "\n";
    }
    write_atomic(p, kept);
  }

  // A checkpoint directory is complete before LATEST points at it.
  void save_checkpoint(const nn::Optimizer* opt) {
    std::string name = "stage" + std::to_string(state_.stage) + "-step" + std::to_string(state_.step);
    fs::path dir = out_ / "checkpoints" / name, tmp = out_ / "checkpoints" / (name + ".tmp");
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nn::save_safetensors((tmp / "model.safetensors").string(), model_->state_dict());
    if (opt) nn::save_safetensors((tmp / "optimizer.safetensors").string(), opt->state_dict());
    write_atomic(tmp / "state.json", state_json(state_).dump(2));
    fs::remove_all(dir);
    fs::rename(tmp, dir);
    std::string previous;
    if (fs::exists(out_ / "checkpoints" / "LATEST")) std::ifstream(out_ / "checkpoints" / "LATEST") >> previous;
    write_atomic(out_ / "checkpoints" / "LATEST", name + "\n");
    if (!previous.empty() && previous != name) fs::remove_all(out_ / "checkpoints" / previous);
  }

  void save_best() {
    fs::create_directories(out_ / "best");
    nn::save_safetensors((out_ / "best" / "model.safetensors").string(), model_->state_dict());
  }

  void export_model() {
    fs::path dir = out_ / "model", tmp = out_ / "model.tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nn::save_safetensors((tmp / "model.safetensors").string(), model_->state_dict(), {{"format", "pt"}});
    const nn::BertConfig& c = model_->bert->config;  // after any pruning
    json j = c.to_json();
    j["architectures"] = {"BertForSequenceClassification"};
    json id2label = json::object(), label2id = json::object();
    for (int64_t i = 0; i < c.num_labels; ++i) {
      std::string n = i < static_cast<int64_t>(spec_.label_names.size()) ? spec_.label_names[i] : "LABEL_" + std::to_string(i);
      id2label[std::to_string(i)] = n;
      label2id[n] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
    if (regression_) j["problem_type"] = "regression";
    write_atomic(tmp / "config.json", j.dump(2) + "\n");
    for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "spiece.model"})
      if (fs::exists(fs::path(e_.model.path) / f)) fs::copy_file(fs::path(e_.model.path) / f, tmp / f);
    fs::remove_all(dir);
    fs::rename(tmp, dir);
    std::fprintf(stderr, "export: %s\n", dir.string().c_str());
  }

  // Median wall time of 5 forward passes (after one warm-up) on dummy ids, in ms.
  double forward_latency_ms(int64_t batch, int64_t seq) {
    NoGradGuard ng;
    model_->eval();
    Tensor ids = Tensor::full({batch, seq}, static_cast<double>(tokenizer_->cls_id()), DType::i64);
    Tensor mask = Tensor::ones({batch, seq}, DType::i64);
    std::vector<double> ms;
    for (int i = 0; i < 6; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      model_->forward(ids, Tensor(), mask).data().to_vector<float>();
      if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  void write_summary() {
    json s;
    s["name"] = e_.name;
    s["final_eval"] = state_.last_eval;
    s["best"] = {{"metric", main_metric(e_.data.task, regression_)}, {"value", state_.best}, {"step", state_.best_step}};
    s["parameters"] = model_->num_parameters();
    s["heads_per_layer"] = model_->bert->config.heads_per_layer;
    s["intermediate_sizes"] = model_->bert->config.intermediate_sizes;
    if (dev_) {  // FLOPs of one forward pass at the average dev length (encoder only)
      double total_len = 0;
      for (int64_t i = 0; i < dev_->size(); ++i) total_len += static_cast<double>(dev_->length(i));
      int64_t avg = static_cast<int64_t>(std::lround(total_len / static_cast<double>(dev_->size())));
      auto f = pruning::bert_flops(model_->bert->config, avg);
      json layers = json::array();
      for (auto& l : f) layers.push_back({{"attention", l.attention}, {"ffn", l.ffn}});
      s["flops"] = {{"seq_len", avg}, {"total", pruning::total_flops(f)}, {"per_layer", layers}};
      s["latency_ms"] = {{"seq_len", avg}, {"batch_1", forward_latency_ms(1, avg)}, {"batch_32", forward_latency_ms(32, avg)}};
    }
    s["train_examples"] = train_ ? train_->size() : 0;
    s["dev_examples"] = dev_ ? dev_->size() : 0;
    s["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    s["threads"] = omp_get_max_threads();
    write_atomic(out_ / "summary.json", s.dump(2) + "\n");
    std::fprintf(stderr, "summary: %s\n", (out_ / "summary.json").string().c_str());
  }

  const Experiment& e_;
  RunOptions o_;
  fs::path out_;
  Generator dropout_gen_;
  RunState state_;
  data::TaskSpec spec_;
  bool regression_ = false;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<data::Dataset> train_, dev_;
  nn::BertConfig cfg_;
  std::unique_ptr<nn::BertForSequenceClassification> model_;
  fs::path resume_optimizer_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace

void run_experiment(const Experiment& e, const RunOptions& options) { Run(e, options).execute(); }

}  // namespace lopper::trainers
