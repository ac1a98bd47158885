// The loop of a training stage around Trainer::step.
#include "trainers/train_loop.h"

#include <omp.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "nn/safetensors.h"
#include "trainers/metrics.h"
#include "trainers/progress.h"
#include "trainers/run.h"
#include "trainers/trainer.h"

namespace lopper::trainers {

using json = nlohmann::json;

void parse_train_options(Fields& s, const Experiment& e, TrainOptions& o, bool load_best_default, bool distill_default) {
  o.epochs = s.num("epochs", 1, 0, 1000, "> 0");
  o.max_steps = s.integer("max_steps", 0, 0, INT64_MAX, "0 (from epochs) or a step count");
  LOPPER_CHECK(o.epochs > 0 || o.max_steps > 0, s.path(), ": needs epochs > 0 or max_steps > 0");
  o.lr = s.num("lr", 5e-5, 1e-12, 10, "a learning rate > 0");
  o.batch_size = s.integer("batch_size", 32, 1, 65536, "1 or more");
  o.eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
  o.weight_decay = s.num("weight_decay", 0.01, 0, 10, ">= 0");
  o.warmup_ratio = s.num("warmup_ratio", 0.06, 0, 1, "0 to 1");
  o.schedule = s.choice("schedule", "linear", {"linear", "cosine", "constant"});
  o.grad_accum = s.integer("grad_accum", 1, 1, 4096, "1 or more");
  o.max_grad_norm = s.num("max_grad_norm", 1.0, 0, 1e9, ">= 0 (0 disables clipping)");
  o.label_smoothing = s.num("label_smoothing", 0, 0, 1, "0 to 1");
  o.eval_every = s.integer("eval_every", 0, 0, INT64_MAX, "0 (each epoch) or a step count");
  o.checkpoint_every = s.integer("checkpoint_every", 0, 0, INT64_MAX, "0 (at each evaluation) or a step count");
  o.log_every = s.integer("log_every", 50, 1, INT64_MAX, "1 or more");
  o.load_best = s.boolean("load_best", load_best_default);
  o.distill = s.boolean("distill", distill_default && e.teacher.enabled);
  LOPPER_CHECK(!o.distill || e.teacher.enabled, s.path(), ".distill: needs a \"teacher\" block");
}

namespace {

// One metrics.jsonl line (every log_every steps) and the progress line (every step).
void log_step(Run& run, const TrainOptions& o, const StepStats& st, int64_t total, Progress& progress) {
  RunState& state = run.state();
  double k = 1.0 / static_cast<double>(o.grad_accum);
  std::string extra;
  for (auto& m : run.methods()) {  // piece by piece: GCC 12 warns falsely (-Wrestrict) on " " + string
    extra += ' ';
    extra += m.method->status();
  }
  if (run.writer()) progress.update(state.step, st.loss * k, st.lr, st.examples, extra);
  if (state.step % o.log_every != 0 && state.step != total) return;
  json j = {{"stage", state.stage}, {"step", state.step}, {"epoch", state.epoch}, {"loss", st.loss * k}, {"lr", st.lr},
           {"grad_norm", st.grad_norm}};
  if (o.distill || !run.methods().empty()) j["task_loss"] = st.task * k;
  if (o.distill) j["distill_loss"] = st.logits * k;
  if (o.distill && run.teacher().wants_hidden()) j["hidden_loss"] = st.hidden * k;
  for (auto& m : run.methods()) m.method->report(j);
  run.log_metrics(j);
}

// A step whose loss or gradients went NaN or infinite ends the run there: no weight was
// updated, no checkpoint is written over the last good one, no later stage runs.
// The step's losses as the mean over ranks, and its examples summed: what one process with
// the whole global batch would log.
void average_stats(Communicator& comm, StepStats& st) {
  Tensor v = Tensor::from_vector<double>({st.loss, st.task, st.logits, st.hidden, st.grad_norm}, {5});
  comm.all_reduce(v, Reduce::mean);
  auto m = v.to_vector<double>();
  st.loss = m[0], st.task = m[1], st.logits = m[2], st.hidden = m[3], st.grad_norm = m[4];
  st.examples *= comm.size();
}

// Per training stage, in RunState::timing (kept over resumes) and summary.json: steps, wall
// seconds of the steps (batches, forward, backward, all-reduce, update; not evaluation or
// checkpoints) and of the gradient all-reduce.
void add_timing(Run& run, const StageSpec& s, double seconds, double comm_seconds) {
  nlohmann::json& t = run.state().timing[std::to_string(run.state().stage)];
  if (t.is_null()) t = {{"kind", s.kind}, {"steps", 0}, {"seconds", 0.0}, {"allreduce_seconds", 0.0}};
  t["steps"] = t["steps"].get<int64_t>() + 1;
  t["seconds"] = t["seconds"].get<double>() + seconds;
  t["allreduce_seconds"] = t["allreduce_seconds"].get<double>() + comm_seconds;
}

void print_timing(Run& run, const StageSpec& s) {
  const nlohmann::json& t = run.state().timing[std::to_string(run.state().stage)];
  if (t.is_null() || t["steps"].get<int64_t>() == 0) return;
  nlohmann::json r = timing_report(t);
  std::fprintf(stderr, "%s: %lld steps, %.1f ms per step", s.kind.c_str(), r["steps"].get<long long>(),
               r["ms_per_step"].get<double>());
  if (run.comm().size() > 1)
    std::fprintf(stderr, ", gradient all-reduce %.1f ms (%.1f%%)", r["allreduce_ms_per_step"].get<double>(),
                 100 * r["allreduce_share"].get<double>());
  std::fputc('\n', stderr);
}

[[noreturn]] void stop_non_finite(Run& run, const StageSpec& s, const StepStats& st, int64_t total) {
  std::string latest;
  std::ifstream(run.out() / "checkpoints" / "LATEST") >> latest;
  LOPPER_FAIL(s.path, " (", s.kind, "), step ", run.state().step + 1, " of ", total, ": not finite (loss ", st.loss,
              ", gradient norm ", st.grad_norm, "); stopped before updating the weights, nothing exported",
              latest.empty() ? std::string("") : "; the last good checkpoint is checkpoints/" + latest,
              " (a lower lr or max_grad_norm usually helps)");
}

}  // namespace

void train_stage(Run& run, const StageSpec& s, const TrainOptions& o) {
  const data::Dataset* train = run.train_data();
  LOPPER_CHECK(train && run.dev_data(), "[", s.kind, "] needs data.train and data.dev");
  RunState& state = run.state();
  if (state.step == 0 && state.epoch == 0 && state.batch_in_epoch == 0) {
    state.best = -1e300;  // the best checkpoint is per stage: shapes may change between stages
    state.best_step = -1;
  }
  int64_t batches_per_epoch = (train->size() + o.batch_size - 1) / o.batch_size;
  // Data parallel: the epoch is cut into global batches of batch_size x world, the same ones
  // a single process with that batch size would take, and rank r trains on rows
  // [r batch_size, (r + 1) batch_size) of each; a last global batch too short to give every
  // rank a full share is dropped (one process keeps its last, shorter batch).
  Communicator& comm = run.comm();
  const int64_t world = comm.size();
  if (world > 1) batches_per_epoch = train->size() / (o.batch_size * world);
  int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / o.grad_accum);
  int64_t total = o.max_steps > 0 ? o.max_steps : static_cast<int64_t>(std::ceil(o.epochs * steps_per_epoch));
  int64_t eval_every = o.eval_every > 0 ? o.eval_every : steps_per_epoch;
  int64_t ckpt_every = o.checkpoint_every > 0 ? o.checkpoint_every : eval_every;

  std::vector<pruning::PruningMethod*> methods;
  for (auto& m : run.methods()) methods.push_back(m.method.get());
  TrainerOptions to{o.lr, o.weight_decay,
                    nn::LrSchedule{nn::schedule_from_name(o.schedule), static_cast<int64_t>(o.warmup_ratio * total), total},
                    o.max_grad_norm, o.label_smoothing, run.regression()};
  Trainer trainer(run.model(), methods, o.distill ? &run.teacher() : nullptr, comm, run.dropout_gen(), to,
                  &run.held_masks());
  if (auto p = run.take_resume_optimizer(); !p.empty())
    trainer.optimizer().load_state_dict(nn::load_safetensors(p.string()).tensors);
  if (run.writer())
    std::fprintf(stderr, "%s: %lld examples, %lld steps (%lld per epoch), batch %lld x %lld%s, lr %.2e, %d threads, %s\n",
                 s.kind.c_str(), static_cast<long long>(train->size()), static_cast<long long>(total),
                 static_cast<long long>(steps_per_epoch), static_cast<long long>(o.batch_size),
                 static_cast<long long>(o.grad_accum),
                 world > 1 ? (" x " + std::to_string(world) + " ranks (" + comm.name() + ")").c_str() : "", o.lr,
                 omp_get_max_threads(), run.device().str().c_str());

  const std::string metric = main_metric(run.experiment().data.task, run.regression());
  Progress progress(s.kind, total, o.log_every);
  while (state.step < total) {
    auto batches = data::epoch_batches(*train, o.batch_size * world, true, run.experiment().seed, state.epoch);
    if (world > 1) std::erase_if(batches, [&](const auto& b) { return static_cast<int64_t>(b.size()) < o.batch_size * world; });
    while (state.step < total && state.batch_in_epoch + o.grad_accum <= static_cast<int64_t>(batches.size())) {
      auto t_step = std::chrono::steady_clock::now();
      std::vector<data::Batch> micro;
      for (int64_t a = 0; a < o.grad_accum; ++a) {
        const std::vector<int64_t>& global = batches[state.batch_in_epoch++];
        std::vector<int64_t> mine(global.begin() + comm.rank() * o.batch_size,
                                  global.begin() + std::min<int64_t>(global.size(), (comm.rank() + 1) * o.batch_size));
        micro.push_back(run.on_device(train->collate(world > 1 ? mine : global)));
      }
      StepStats st = trainer.step(micro, state.step, total);
      if (world > 1) average_stats(comm, st);
      add_timing(run, s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count(), st.comm_seconds);
      if (!st.finite()) stop_non_finite(run, s, st, total);
      ++state.step;
      log_step(run, o, st, total, progress);
      bool at_end = state.step == total;
      if (state.step % eval_every == 0 || at_end) {
        json m = run.evaluate(o.eval_batch_size);
        if (run.writer()) progress.note("eval at step " + std::to_string(state.step) + ": " + m.dump());
        for (auto& am : run.methods())
          if (std::string p = am.method->picture(); !p.empty() && run.writer()) progress.note(p);
        if (double score = m.at(metric); score > state.best) {
          state.best = score;
          state.best_step = state.step;
          run.save_best();
        }
      }
      state.dropout_offset = run.dropout_gen().offset();
      bool stop = run.interrupted();
      if (state.step % ckpt_every == 0 || at_end || stop) run.save_checkpoint(&trainer.optimizer());
      if (stop) run.stop();
      const RunOptions& ro = run.options();
      if (ro.kill_after_step == state.step && (ro.kill_stage < 0 || ro.kill_stage == state.stage)) ::raise(ro.kill_signal);
    }
    if (state.step < total) {
      ++state.epoch;
      state.batch_in_epoch = 0;
    }
  }
  if (run.writer()) {
    progress.finish();
    print_timing(run, s);
  }
  if (o.load_best && state.best_step > 0 && state.best_step != state.step) {
    run.load_best();
    std::fprintf(stderr, "%s: loaded the best checkpoint (step %lld, %s %.4f)\n", s.kind.c_str(),
                 static_cast<long long>(state.best_step), metric.c_str(), state.best);
    state.last_eval = run.evaluate(o.eval_batch_size, false);
  }
}

}  // namespace lopper::trainers
