// The stage runner: setup, the training step (with distillation and head gates), head
// removal, evaluation, checkpoints, export.
#include "trainers/runner.h"

#include <omp.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>

#include "core/ops.h"
#include "core/version.h"
#include "data/dataset.h"
#include "nn/bert.h"
#include "nn/losses.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "pruning/compact.h"
#include "pruning/gates.h"
#include "trainers/distill.h"
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

int64_t total_heads(const nn::BertConfig& c) {
  return std::accumulate(c.heads_per_layer.begin(), c.heads_per_layer.end(), int64_t{0});
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
  double lambda_1 = 0, lambda_2 = 0;  // the head-count Lagrangian's multipliers
  double wall_seconds = 0;            // run time up to this state, over every resume
  json pruning = json::object();      // before/after measurements, final gates, heads removed
};

json state_json(const RunState& s) {
  return {{"stage", s.stage}, {"step", s.step}, {"epoch", s.epoch}, {"batch_in_epoch", s.batch_in_epoch},
          {"dropout_offset", s.dropout_offset}, {"best", s.best}, {"best_step", s.best_step}, {"last_eval", s.last_eval},
          {"lambda_1", s.lambda_1}, {"lambda_2", s.lambda_2}, {"pruning", s.pruning}, {"wall_seconds", s.wall_seconds}};
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
  s.lambda_1 = j.at("lambda_1");
  s.lambda_2 = j.at("lambda_2");
  s.pruning = j.at("pruning");
  s.wall_seconds = j.at("wall_seconds");
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
      if (s.kind == "finetune" || s.kind == "head_gates" || s.kind == "mask_tune") train(s);
      else if (s.kind == "remove_heads") remove_heads(s);
      else if (s.kind == "evaluate") evaluate_stage(s);
      else export_model();
      // A finished stage is a checkpoint: a resumed run starts at the next one.
      RunState next;
      next.stage = i + 1;
      next.dropout_offset = dropout_gen_.offset();
      next.best = state_.best;
      next.best_step = state_.best_step;
      next.last_eval = state_.last_eval;
      next.pruning = state_.pruning;
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
      for (const char* p : {"checkpoints", "best", "model", "teacher", "metrics.jsonl", "summary.json", "predictions.jsonl",
                            "config.resolved.json"})
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
    int64_t heads = total_heads(cfg_);
    for (size_t i = 0; i < e_.stages.size(); ++i)
      LOPPER_CHECK(e_.stages[i].target_heads < heads, "stages.", i, ".target_heads: ", e_.stages[i].target_heads,
                   " is not below the model's ", heads, " heads");
  }

  void setup() {
    json resolved = e_.resolved;
    resolved["lopper"] = {{"version", version()}, {"git_commit", git_commit()}, {"libraries", library_versions()},
                          {"threads", omp_get_max_threads()}};
    write_atomic(out_ / "config.resolved.json", resolved.dump(2) + "\n");
    if (!o_.resume) {
      model_ = build_model(cfg_);
      nn::LoadReport rep = nn::load_pretrained(*model_, e_.model.path, true);
      if (!rep.missing.empty() || !rep.unexpected.empty())
        std::fprintf(stderr, "loading %s: %s(newly initialized weights are expected for a new task head)\n",
                     e_.model.path.c_str(), rep.str().c_str());
      return;
    }
    // A checkpoint carries its own config: the model may have lost heads since the start.
    std::string name;
    std::ifstream(out_ / "checkpoints" / "LATEST") >> name;
    fs::path dir = out_ / "checkpoints" / name;
    state_ = state_from(read_json(dir / "state.json"));
    nn::BertConfig c = nn::BertConfig::from_file((dir / "config.json").string());
    c.num_labels = cfg_.num_labels;
    model_ = build_model(c);
    model_->load_state_dict(nn::load_safetensors((dir / "model.safetensors").string()).tensors);
    if (fs::exists(dir / "gates.safetensors")) {
      make_gates(gate_stage(state_.stage));
      gates_->load_state_dict(nn::load_safetensors((dir / "gates.safetensors").string()).tensors);
    }
    lagrangian_.set(state_.lambda_1, state_.lambda_2);
    wall_base_ = state_.wall_seconds;
    if (fs::exists(dir / "optimizer.safetensors")) resume_optimizer_ = dir / "optimizer.safetensors";
    dropout_gen_.set_state(dropout_gen_.seed(), state_.dropout_offset);
    trim_metrics();
    std::fprintf(stderr, "resuming from %s: stage %lld, step %lld\n", dir.string().c_str(),
                 static_cast<long long>(state_.stage), static_cast<long long>(state_.step));
  }

  std::unique_ptr<nn::BertForSequenceClassification> build_model(const nn::BertConfig& c) const {
    Generator init(e_.seed);
    return std::make_unique<nn::BertForSequenceClassification>(c, init);
  }

  // The head_gates stage whose gates are alive at stage i (it or an evaluate stage after it).
  const StageSpec& gate_stage(int64_t i) const {
    for (int64_t k = i; k >= 0; --k)
      if (e_.stages[k].kind == "head_gates") return e_.stages[k];
    LOPPER_FAIL("checkpoint holds head gates but no head_gates stage precedes stage ", i);
  }

  void make_gates(const StageSpec& s) {
    gates_ = std::make_unique<pruning::BertGates>(model_->bert->config, s.ffn_gates, pruning::HardConcreteParams{s.temperature},
                                                  s.gate_init);
  }

  // The teacher: teacher.path, or a snapshot of the model as the first distilling stage
  // starts, kept in output_dir/teacher so a resumed run distills from the same one.
  void ensure_teacher() {
    if (distiller_) return;
    fs::path dir = e_.teacher.path.empty() ? out_ / "teacher" : fs::path(e_.teacher.path);
    if (e_.teacher.path.empty() && !fs::exists(dir / "model.safetensors")) {
      fs::path tmp = out_ / "teacher.tmp";
      fs::remove_all(tmp);
      fs::create_directories(tmp);
      nn::save_safetensors((tmp / "model.safetensors").string(), model_->state_dict());
      model_->bert->config.save((tmp / "config.json").string());
      fs::rename(tmp, dir);
      std::fprintf(stderr, "teacher: the model as it is now, saved to %s\n", dir.string().c_str());
    }
    nn::BertConfig c = nn::BertConfig::from_file((dir / "config.json").string());
    auto teacher = build_model(c);
    nn::LoadReport rep = nn::load_pretrained(*teacher, dir.string(), true);
    LOPPER_CHECK(rep.missing.empty(), "teacher '", dir.string(), "': ", rep.str(), "(a teacher must be a fine-tuned model)");
    distiller_ = std::make_unique<Distiller>(std::move(teacher), e_.teacher, model_->bert->config);
    std::fprintf(stderr, "teacher: %s (T %.2f, alpha %.2f, hidden weight %.2f)\n", dir.string().c_str(),
                 e_.teacher.temperature, e_.teacher.alpha, e_.teacher.hidden_weight);
  }

  // ---- training stages: finetune, head_gates, mask_tune ----

  struct StepLog {
    double loss = 0, task = 0, logits = 0, hidden = 0, expected_heads = 0, expected_neurons = 0;
  };

  // The loss of one micro-batch: task, distillation, sparsity.
  Variable batch_loss(const StageSpec& s, const data::Batch& b, int64_t total, StepLog& lg) {
    if (gates_) gates_->attach(*model_->bert, &dropout_gen_);  // sampled gates
    std::vector<Variable> hidden;
    bool want_hidden = s.distill && distiller_->wants_hidden();
    Variable logits = model_->forward(b.input_ids, b.token_type_ids, b.attention_mask, {&dropout_gen_},
                                      want_hidden ? &hidden : nullptr);
    Variable loss = regression_ ? model_->loss(logits, b.labels)
                                : nn::cross_entropy(logits, b.labels, nn::kIgnoreIndex, s.label_smoothing);
    lg.task += loss.data().item<double>();
    if (s.distill) {
      Distiller::Parts p = distiller_->loss(loss, logits, hidden, b, regression_);
      loss = p.total;
      lg.logits += p.logits;
      lg.hidden += p.hidden;
    }
    if (gates_) {
      Variable e = gates_->expected_heads();
      lg.expected_heads = e.data().item<double>();
      if (s.target_heads > 0) {
        // The target falls linearly from all heads to target_heads over the warm-up.
        double n = static_cast<double>(gates_->num_heads()), warm = s.target_warmup_ratio * static_cast<double>(total);
        double f = warm > 0 ? std::min(1.0, static_cast<double>(state_.step) / warm) : 1.0;
        double target = n + (static_cast<double>(s.target_heads) - n) * f;
        loss = ag::add(loss, lagrangian_.penalty(ag::scale(e, 1.0 / n), target / n));
      } else {
        loss = ag::add(loss, ag::scale(e, s.l0_penalty));
      }
      if (gates_->has_ffn()) {
        Variable n = gates_->expected_neurons();
        lg.expected_neurons = n.data().item<double>();
        loss = ag::add(loss, ag::scale(n, s.ffn_l0_penalty));
      }
    }
    lg.loss += loss.data().item<double>();
    return loss;
  }

  void train(const StageSpec& s) {
    LOPPER_CHECK(train_ && dev_, "[", s.kind, "] needs data.train and data.dev");
    bool fresh = state_.step == 0 && state_.epoch == 0 && state_.batch_in_epoch == 0;
    if (fresh) {  // the best checkpoint is per stage: shapes may change between stages
      state_.best = -1e300;
      state_.best_step = -1;
    }
    if (s.distill) ensure_teacher();
    if (s.kind == "head_gates" && !gates_) make_gates(s);
    int64_t batches_per_epoch = (train_->size() + s.batch_size - 1) / s.batch_size;
    int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / s.grad_accum);
    int64_t total = s.max_steps > 0 ? s.max_steps : static_cast<int64_t>(std::ceil(s.epochs * steps_per_epoch));
    int64_t eval_every = s.eval_every > 0 ? s.eval_every : steps_per_epoch;
    int64_t ckpt_every = s.checkpoint_every > 0 ? s.checkpoint_every : eval_every;
    auto groups = nn::decay_groups(model_->named_parameters(), s.lr, s.weight_decay);
    if (gates_) {
      nn::NamedParams g;
      for (auto& [n, v] : gates_->named_parameters()) g.emplace_back("head_gates." + n, v);
      groups.push_back({"head_gates", g, s.gate_lr, 0.0});
    }
    nn::AdamW opt(groups);
    if (!resume_optimizer_.empty()) {
      opt.load_state_dict(nn::load_safetensors(resume_optimizer_.string()).tensors);
      resume_optimizer_.clear();
    }
    nn::LrSchedule sched{nn::schedule_from_name(s.schedule), static_cast<int64_t>(s.warmup_ratio * total), total};
    std::fprintf(stderr, "%s: %lld examples, %lld steps (%lld per epoch), batch %lld x %lld, lr %.2e, %d threads\n",
                 s.kind.c_str(), static_cast<long long>(train_->size()), static_cast<long long>(total),
                 static_cast<long long>(steps_per_epoch), static_cast<long long>(s.batch_size),
                 static_cast<long long>(s.grad_accum), s.lr, omp_get_max_threads());
    if (gates_ && gates_->has_ffn())
      std::fprintf(stderr, "%s: FFN neurons gated too, ffn_l0_penalty %g\n", s.kind.c_str(), s.ffn_l0_penalty);
    if (gates_)
      std::fprintf(stderr, "%s: %lld heads gated, %s %g, gate lr %g, temperature %.3f\n", s.kind.c_str(),
                   static_cast<long long>(gates_->num_heads()), s.target_heads > 0 ? "target heads" : "l0_penalty",
                   s.target_heads > 0 ? static_cast<double>(s.target_heads) : s.l0_penalty, s.gate_lr, s.temperature);
    Progress progress(s.kind, total, s.log_every);
    while (state_.step < total) {
      auto batches = data::epoch_batches(*train_, s.batch_size, true, e_.seed, state_.epoch);
      while (state_.step < total && state_.batch_in_epoch + s.grad_accum <= static_cast<int64_t>(batches.size())) {
        // ---- one optimizer step: grad_accum micro-batches, clip, update ----
        model_->train();
        if (gates_) gates_->train();
        opt.zero_grad();
        StepLog lg;
        int64_t examples = 0;
        for (int64_t a = 0; a < s.grad_accum; ++a) {
          data::Batch b = train_->collate(batches[state_.batch_in_epoch++]);
          ag::scale(batch_loss(s, b, total, lg), 1.0 / static_cast<double>(s.grad_accum)).backward();
          examples += b.input_ids.size(0);
        }
        if (s.max_grad_norm > 0) nn::clip_grad_norm(model_->parameters(), s.max_grad_norm);  // not the gates
        double lr = s.lr * sched.factor(opt.steps());
        opt.step(sched.factor(opt.steps()));
        if (gates_ && s.target_heads > 0) lagrangian_.ascend(s.lagrangian_lr);
        ++state_.step;
        // ---- bookkeeping ----
        log_step(s, lg, lr, total, examples, progress);
        bool at_end = state_.step == total;
        if (state_.step % eval_every == 0 || at_end) {
          json m = evaluate(s.eval_batch_size);
          progress.note("eval at step " + std::to_string(state_.step) + ": " + m.dump());
          if (gates_) progress.note("head gates:\n" + pruning::gate_heat_map(gates_->head_values()) + ffn_line());
          double score = m.at(main_metric(e_.data.task, regression_));
          if (score > state_.best) {
            state_.best = score;
            state_.best_step = state_.step;
            save_best();
          }
        }
        dropout_offset_sync();
        if (state_.step % ckpt_every == 0 || at_end) save_checkpoint(&opt);
        if (o_.kill_after_step == state_.step && (o_.kill_stage < 0 || o_.kill_stage == state_.stage)) ::raise(SIGKILL);
      }
      if (state_.step < total) {
        ++state_.epoch;
        state_.batch_in_epoch = 0;
      }
    }
    progress.finish();
    if (s.load_best && state_.best_step > 0 && state_.best_step != state_.step) {
      model_->load_state_dict(nn::load_safetensors((out_ / "best" / "model.safetensors").string()).tensors);
      if (gates_) gates_->load_state_dict(nn::load_safetensors((out_ / "best" / "gates.safetensors").string()).tensors);
      std::fprintf(stderr, "%s: loaded the best checkpoint (step %lld, %s %.4f)\n", s.kind.c_str(),
                   static_cast<long long>(state_.best_step), main_metric(e_.data.task, regression_).c_str(), state_.best);
      state_.last_eval = evaluate(s.eval_batch_size, false);
    }
  }

  void log_step(const StageSpec& s, const StepLog& lg, double lr, int64_t total, int64_t examples, Progress& progress) {
    double k = 1.0 / static_cast<double>(s.grad_accum);
    std::string extra;
    if (gates_) extra = " heads " + std::to_string(lg.expected_heads).substr(0, 5);
    if (gates_ && gates_->has_ffn()) extra += " ffn " + std::to_string(std::lround(lg.expected_neurons));
    progress.update(state_.step, lg.loss * k, lr, examples, extra);
    if (state_.step % s.log_every != 0 && state_.step != total) return;
    json j = {{"stage", state_.stage}, {"step", state_.step}, {"epoch", state_.epoch}, {"loss", lg.loss * k}, {"lr", lr}};
    if (s.distill || gates_) j["task_loss"] = lg.task * k;
    if (s.distill) j["distill_loss"] = lg.logits * k;
    if (s.distill && distiller_->wants_hidden()) j["hidden_loss"] = lg.hidden * k;
    if (gates_) {
      j["expected_heads"] = lg.expected_heads;
      json g = json::array();
      for (auto& layer : gates_->head_values()) {
        json row = json::array();
        for (double v : layer) row.push_back(std::round(v * 1000) / 1000);
        g.push_back(row);
      }
      j["gates"] = g;
      if (s.target_heads > 0) j["lambda"] = {lagrangian_.lambda_1(), lagrangian_.lambda_2()};
      if (gates_->has_ffn()) {
        j["expected_neurons"] = lg.expected_neurons;
        j["ffn_open"] = open_neurons();
      }
    }
    log_metrics(j);
  }

  // Open FFN neurons (deterministic gate >= 0.5) per layer.
  std::vector<int64_t> open_neurons() const {
    std::vector<int64_t> open;
    for (auto& layer : gates_->neuron_values())
      open.push_back(std::count_if(layer.begin(), layer.end(), [](double v) { return v >= 0.5; }));
    return open;
  }
  std::string ffn_line() const {
    if (!gates_->has_ffn()) return "";
    std::string line = "  FFN neurons open per layer:";
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on " " + std::to_string(n).
    for (int64_t n : open_neurons()) {
      line += ' ';
      line += std::to_string(n);
    }
    return line + "\n";
  }

  // ---- remove_heads ----

  void remove_heads(const StageSpec& s) {
    LOPPER_CHECK(gates_ != nullptr, "[remove_heads] no head gates (a head_gates stage must run first)");
    pruning::BertGates::detach(*model_->bert);
    state_.pruning["before"] = measure();
    auto gates = gates_->head_values();
    std::fprintf(stderr, "remove_heads: gates (threshold %.2f)\n%s", s.threshold, pruning::gate_heat_map(gates, s.threshold).c_str());
    auto removed = pruning::remove_gated_heads(*model_->bert, gates, s.threshold, s.allow_empty_layers);
    if (gates_->has_ffn()) {
      std::vector<int64_t> before = model_->bert->config.intermediate_sizes;
      std::vector<int64_t> kept = pruning::remove_gated_neurons(*model_->bert, gates_->neuron_values(), s.threshold);
      std::fprintf(stderr, "remove_heads: FFN neurons kept per layer:");
      for (size_t l = 0; l < kept.size(); ++l)
        std::fprintf(stderr, " %lld/%lld", static_cast<long long>(kept[l]), static_cast<long long>(before[l]));
      std::fprintf(stderr, "\n");
      state_.pruning["ffn_kept"] = kept;
    }
    gates_.reset();
    json r = json::object();
    for (auto& [l, h] : removed) r[std::to_string(l)] = h;
    state_.pruning["gates"] = gates;
    state_.pruning["removed"] = r;
    std::fprintf(stderr, "remove_heads: %lld heads kept of %lld\n", static_cast<long long>(total_heads(model_->bert->config)),
                 static_cast<long long>(model_->bert->config.num_attention_heads * model_->bert->config.num_hidden_layers));
    if (dev_) std::fprintf(stderr, "remove_heads: dev %s\n", evaluate(64).dump().c_str());
  }

  void dropout_offset_sync() { state_.dropout_offset = dropout_gen_.offset(); }

  // ---- evaluation ----

  json evaluate(int64_t batch_size, bool log = true, std::vector<std::vector<float>>* logits_out = nullptr) {
    LOPPER_CHECK(dev_ != nullptr, "[evaluate] needs data.dev");
    NoGradGuard ng;
    model_->eval();
    if (gates_) gates_->attach(*model_->bert, nullptr);  // deterministic gates
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
    model_->bert->config.save((tmp / "config.json").string());
    if (gates_) nn::save_safetensors((tmp / "gates.safetensors").string(), gates_->state_dict());
    if (opt) nn::save_safetensors((tmp / "optimizer.safetensors").string(), opt->state_dict());
    state_.lambda_1 = lagrangian_.lambda_1();
    state_.lambda_2 = lagrangian_.lambda_2();
    state_.wall_seconds = elapsed_seconds();
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
    if (gates_) nn::save_safetensors((out_ / "best" / "gates.safetensors").string(), gates_->state_dict());
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

  // Median wall time of a forward pass on dummy ids, in ms: two warm-up passes, then at
  // least 5 and up to 50 timed ones, stopping after a second.
  double forward_latency_ms(int64_t batch, int64_t seq) {
    NoGradGuard ng;
    model_->eval();
    Tensor ids = Tensor::full({batch, seq}, static_cast<double>(tokenizer_->cls_id()), DType::i64);
    Tensor mask = Tensor::ones({batch, seq}, DType::i64);
    std::vector<double> ms;
    double spent = 0;
    for (int i = 0; i < 52 && (i < 7 || spent < 1000); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      model_->forward(ids, Tensor(), mask).data().to_vector<float>();
      double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= 2) {
        ms.push_back(t);
        spent += t;
      }
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  // Wall time of the run so far, counting the time spent before each resume up to its checkpoint.
  double elapsed_seconds() const {
    return wall_base_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

  // Size and speed of the model as it is now: parameters, encoder FLOPs of one sequence at
  // the average dev length, forward latency at batch 1 and 32.
  json measure() {
    json m = {{"parameters", model_->num_parameters()}};
    m["heads"] = total_heads(model_->bert->config);
    if (!dev_) return m;
    double total_len = 0;
    for (int64_t i = 0; i < dev_->size(); ++i) total_len += static_cast<double>(dev_->length(i));
    int64_t avg = static_cast<int64_t>(std::lround(total_len / static_cast<double>(dev_->size())));
    auto f = pruning::bert_flops(model_->bert->config, avg);
    json layers = json::array();
    for (auto& l : f) layers.push_back({{"attention", l.attention}, {"ffn", l.ffn}});
    m["flops"] = {{"seq_len", avg}, {"total", pruning::total_flops(f)}, {"per_layer", layers}};
    m["latency_ms"] = {{"seq_len", avg}, {"batch_1", forward_latency_ms(1, avg)}, {"batch_32", forward_latency_ms(32, avg)}};
    return m;
  }

  void write_summary() {
    json s;
    s["name"] = e_.name;
    s["final_eval"] = state_.last_eval;
    s["best"] = {{"metric", main_metric(e_.data.task, regression_)}, {"value", state_.best}, {"step", state_.best_step}};
    s["heads_per_layer"] = model_->bert->config.heads_per_layer;
    s["intermediate_sizes"] = model_->bert->config.intermediate_sizes;
    json now = measure();
    for (auto& [k, v] : now.items()) s[k] = v;
    if (state_.pruning.contains("before")) {
      json p = state_.pruning;
      const nn::BertConfig& c = model_->bert->config;
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
    s["train_examples"] = train_ ? train_->size() : 0;
    s["dev_examples"] = dev_ ? dev_->size() : 0;
    s["wall_seconds"] = elapsed_seconds();
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
  std::unique_ptr<pruning::BertGates> gates_;  // from head_gates to remove_heads
  pruning::Lagrangian lagrangian_;
  std::unique_ptr<Distiller> distiller_;
  fs::path resume_optimizer_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  double wall_base_ = 0;
};

}  // namespace

void run_experiment(const Experiment& e, const RunOptions& options) { Run(e, options).execute(); }

}  // namespace lopper::trainers
