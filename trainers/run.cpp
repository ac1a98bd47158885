// A run: inputs checked before anything is written, setup (fresh or resumed), the stages
// dispatched through the registry, the teacher, evaluation.
#include "trainers/run.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>

#include "core/ops.h"
#include "core/version.h"
#include "nn/safetensors.h"
#include "trainers/metrics.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

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

namespace {

volatile std::sig_atomic_t g_interrupted = 0;

void on_signal(int) {
  g_interrupted = 1;
  const char msg[] = "\nfinetune_prune: stopping after this step to save a checkpoint (again to stop at once)\n";
  ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)ignored;
}

// SIGINT and SIGTERM set the flag once; the handler resets itself, so a second signal
// stops the process at once.
void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

bool interrupt_requested() { return g_interrupted != 0; }

// With several ranks a signal may reach them at different steps; they stop together at
// the first step boundary after any of them saw one.
bool Run::interrupted() {
  if (comm_->size() == 1) return interrupt_requested();
  Tensor flag = Tensor::full({1}, interrupt_requested() ? 1.0 : 0.0, DType::f64);
  comm_->all_reduce(flag, Reduce::sum);
  return flag.item<double>() > 0;
}

void Run::stop() const {
  const StageSpec& s = e_.stages.at(static_cast<size_t>(state_.stage));
  throw Interrupted("interrupted at " + s.path + " (" + s.kind + "), step " + std::to_string(state_.step) +
                    "; a checkpoint is saved: continue with --resume");
}

// Dropout and mask sampling: one stream per (seed, rank); rank 0's is a single process's.
Run::Run(const Experiment& e, const RunOptions& o)
    : e_(e), o_(o), out_(e.output_dir), device_(Device::parse(e.device)), comm_(make_communicator()),
      dropout_gen_((e.seed ^ 0x5eedull) + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(comm_->rank())) {}

void Run::execute() {
  try {
    execute_here();
  } catch (const Interrupted&) {
    throw;  // every rank agreed to stop (Run::interrupted) and saved its checkpoint
  } catch (const std::exception& ex) {
    // An error seen by one rank: the others may be waiting for it in a collective, so the
    // whole job ends here, with this rank's message.
    if (comm_->size() > 1) {
      std::fprintf(stderr, "finetune_prune (rank %d of %d): error: %s\nfinetune_prune (rank %d): ending every rank\n",
                   comm_->rank(), comm_->size(), ex.what(), comm_->rank());
      comm_->abort(1);
    }
    throw;
  }
}

void Run::execute_here() {
  place();
  load_inputs();  // every input is read and checked before anything is written
  prepare_output();
  setup();
  catch_interrupts();
  for (int64_t i = state_.stage; i < static_cast<int64_t>(e_.stages.size()); ++i) {
    state_.stage = i;
    const StageSpec& s = e_.stages[i];
    if (writer()) std::fprintf(stderr, "== stage %lld: %s\n", static_cast<long long>(i), s.kind.c_str());
    stage_kind(s.kind).run(*this, s);
    // A finished stage is a checkpoint: a resumed run starts at the next one.
    RunState next;
    next.stage = i + 1;
    next.dropout_offset = dropout_gen_.offset();
    next.best = state_.best;
    next.best_step = state_.best_step;
    next.last_eval = state_.last_eval;
    next.pruning = state_.pruning;
    next.timing = state_.timing;
    next.sparsity = state_.sparsity;
    state_ = next;
    save_checkpoint(nullptr);
    if (i + 1 < static_cast<int64_t>(e_.stages.size()) && interrupted()) stop();  // after the last, just finish
  }
  write_summary();
}

// The device this rank computes on, and on GPUs the communicator: with several ranks,
// "cuda" is cuda:<local rank> and gradients go through NCCL (MPI only bootstraps it).
void Run::place() {
  if (device_.is_cuda() && comm_->size() > 1) {
    LOPPER_CHECK(e_.device == "cuda", "device: '", e_.device, "' with ", comm_->size(), " ranks: write \"cuda\", and each ",
                 "rank takes the GPU of its local rank (cuda:0, cuda:1, ... on each node)");
    device_ = Device::cuda(comm_->local_rank());
  }
  check_device();
  if (device_.is_cuda() && comm_->size() > 1) comm_ = make_nccl_communicator(std::move(comm_), device_.index);
}

void Run::check_device() const {
  if (device_.is_cpu()) return;
  LOPPER_CHECK(cuda_built(), "device: '", e_.device, "' needs a CUDA build of Lopper; this one is CPU-only (configure with ",
               "-DLOPPER_CUDA=ON where the CUDA toolkit is installed), or set \"device\": \"cpu\"");
  int n = cuda_device_count();
  LOPPER_CHECK(device_.index < n, "device: '", device_.str(), "' is not available: this machine has ",
               n == 0 ? std::string("no CUDA device") : std::to_string(n) + " CUDA device(s)", " (set \"device\": \"cpu\")");
}

Run::~Run() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

// One process per output folder: an advisory lock on output_dir/.lock, held until exit,
// with the holder's pid in it for the message the second one gives.
void Run::lock_output() {
  std::error_code ec;
  fs::create_directories(out_, ec);
  LOPPER_CHECK(!ec, "output_dir '", out_.string(), "' cannot be created: ", ec.message());
  fs::path lock = out_ / ".lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  LOPPER_CHECK(lock_fd_ >= 0, "output_dir '", out_.string(), "' is not writable (", std::strerror(errno), ")");
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder;
    std::ifstream(lock) >> holder;
    LOPPER_FAIL("output_dir '", out_.string(), "' is in use by another run (pid ", holder.empty() ? "unknown" : holder,
                "): wait for it to finish, or choose another output_dir");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  LOPPER_CHECK(::ftruncate(lock_fd_, 0) == 0 && ::pwrite(lock_fd_, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size()),
               "output_dir '", out_.string(), "': cannot write its lock file (disk full?)");
}

void Run::prepare_output() {
  if (writer()) prepare_output_here();
  comm_->barrier();  // the others read what rank 0 checked and cleared
}

void Run::prepare_output_here() {
  lock_output();
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

void Run::load_inputs() {
  if (e_.threads > 0) omp_set_num_threads(static_cast<int>(e_.threads));
  task_ = e_.data.task == "custom" ? data::TaskSpec{} : data::TaskSpec::glue(e_.data.task);
  task_.format = e_.data.format;
  task_.header = e_.data.header;
  if (!e_.data.text.empty()) task_.text = e_.data.text;
  if (!e_.data.text_pair.empty()) task_.text_pair = e_.data.text_pair;
  if (!e_.data.label.empty()) task_.label = e_.data.label;
  if (!e_.data.label_type.empty()) task_.label_type = e_.data.label_type;
  if (!e_.data.label_names.empty()) task_.label_names = e_.data.label_names;
  if (task_.label_type == "string") task_.num_labels = static_cast<int64_t>(task_.label_names.size());
  if (task_.label_type == "float") task_.num_labels = 1;
  if (e_.model.num_labels > 0) task_.num_labels = e_.model.num_labels;
  regression_ = task_.num_labels == 1;
  tokenizer_ = data::load_tokenizer(e_.model.path);
  if (!e_.data.train.empty()) {
    auto ex = data::read_examples(e_.data.train, task_, e_.data.max_train_examples);
    train_ = std::make_unique<data::Dataset>(ex, *tokenizer_, e_.data.max_seq_len, regression_);
  }
  if (!e_.data.dev.empty()) {
    auto ex = data::read_examples(e_.data.dev, task_, e_.data.max_eval_examples);
    dev_ = std::make_unique<data::Dataset>(ex, *tokenizer_, e_.data.max_seq_len, regression_);
  }
  cfg_ = nn::BertConfig::from_file((fs::path(e_.model.path) / "config.json").string());
  cfg_.num_labels = task_.num_labels;
  check_limits();
  for (const StageSpec& s : e_.stages)
    if (const StageKind& k = stage_kind(s.kind); k.check) k.check(s, cfg_);
  if (!o_.resume) {  // a resumed run loads its checkpoint instead
    model_ = build_model(cfg_);
    load_notes_ = check_load(nn::load_pretrained(*model_, e_.model.path, true), "model.path '" + e_.model.path + "'");
  }
}

// What would otherwise fail mid-run, hours in: lengths, vocabulary and teacher against the model.
void Run::check_limits() const {
  LOPPER_CHECK(e_.data.max_seq_len <= cfg_.max_position_embeddings, "data.max_seq_len: ", e_.data.max_seq_len,
               " is more than the model's max_position_embeddings, ", cfg_.max_position_embeddings);
  LOPPER_CHECK(tokenizer_->vocab_size() <= cfg_.vocab_size, "model.path '", e_.model.path, "': the tokenizer has ",
               tokenizer_->vocab_size(), " tokens, the embedding table (vocab_size) only ", cfg_.vocab_size);
  LOPPER_CHECK(task_.text_pair.empty() || cfg_.type_vocab_size >= 2, "data: sentence pairs need type_vocab_size >= 2; '",
               e_.model.path, "' has ", cfg_.type_vocab_size);
  if (!e_.teacher.enabled) return;
  nn::BertConfig t = cfg_;  // the model itself teaches unless teacher.path names another
  if (!e_.teacher.path.empty()) t = nn::BertConfig::from_file((fs::path(e_.teacher.path) / "config.json").string());
  Distiller::check(e_.teacher, t, cfg_);
}

void Run::setup() {
  if (o_.resume) {
    restore();  // checks that the experiment is the one that wrote the checkpoint
  } else {
    std::fputs(load_notes_.c_str(), stderr);  // printed once the run goes ahead
    model_->to(device_);
  }
  json resolved = e_.resolved;
  resolved["lopper"] = {{"version", version()}, {"git_commit", git_commit()}, {"libraries", library_versions()},
                        {"threads", omp_get_max_threads()}, {"world_size", comm_->size()}};
  if (writer()) write_atomic(out_ / "config.resolved.json", resolved.dump(2) + "\n");
}

// Only the task head may be new; weights the config has no place for are an error inside
// the encoder (a config that does not match its file) and a note elsewhere (an MLM head).
// Returns the notes, to print once the run goes ahead.
std::string Run::check_load(const nn::LoadReport& rep, const std::string& what) const {
  nn::require_backbone(rep, what);
  std::vector<std::string> extra_encoder, extra_other;
  for (const std::string& k : rep.unexpected) (k.rfind("bert.", 0) == 0 ? extra_encoder : extra_other).push_back(k);
  LOPPER_CHECK(extra_encoder.empty(), what, ": the checkpoint holds ", extra_encoder.size(), " weight(s) its config has no ",
               "place for, such as '", extra_encoder.empty() ? "" : extra_encoder[0], "' (does config.json match model.safetensors?)");
  std::string notes;
  if (!extra_other.empty())
    notes += "loading " + what + ": " + std::to_string(extra_other.size()) +
             " weight(s) not used by sequence classification, such as '" + extra_other[0] + "'\n";
  if (!rep.missing.empty())
    notes += "loading " + what + ": a new task head (" + std::to_string(cfg_.num_labels) + " labels" +
             (rep.resized.empty() ? "" : "; the file's head has another label count") + "), initialized from seed " +
             std::to_string(e_.seed) + "\n";
  return notes;
}

std::unique_ptr<nn::BertForSequenceClassification> Run::build_model(const nn::BertConfig& c) const {
  Generator init(e_.seed);
  return std::make_unique<nn::BertForSequenceClassification>(c, init);
}

Distiller& Run::teacher() {
  if (distiller_) return *distiller_;
  fs::path dir = e_.teacher.path.empty() ? out_ / "teacher" : fs::path(e_.teacher.path);
  if (e_.teacher.path.empty() && !fs::exists(dir / "model.safetensors") && writer()) {
    fs::path tmp = out_ / "teacher.tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nn::save_safetensors((tmp / "model.safetensors").string(), model_->state_dict());
    model_->config().save((tmp / "config.json").string());
    fs::rename(tmp, dir);
    std::fprintf(stderr, "teacher: the model as it is now, saved to %s\n", dir.string().c_str());
  }
  if (e_.teacher.path.empty()) comm_->barrier();  // the others load what rank 0 saved
  nn::BertConfig c = nn::BertConfig::from_file((dir / "config.json").string());
  auto teacher = build_model(c);
  nn::LoadReport rep = nn::load_pretrained(*teacher, dir.string(), true);
  LOPPER_CHECK(rep.missing.empty(), "teacher '", dir.string(), "': ", rep.str(), "(a teacher must be a fine-tuned model)");
  std::fputs(check_load(rep, "teacher '" + dir.string() + "'").c_str(), stderr);
  teacher->to(device_);
  distiller_ = std::make_unique<Distiller>(std::move(teacher), e_.teacher, model_->config());
  std::fprintf(stderr, "teacher: %s (T %.2f, alpha %.2f, hidden weight %.2f)\n", dir.string().c_str(), e_.teacher.temperature,
               e_.teacher.alpha, e_.teacher.hidden_weight);
  return *distiller_;
}

data::Batch Run::on_device(data::Batch b) const {
  if (device_.is_cpu()) return b;
  for (Tensor* t : {&b.input_ids, &b.token_type_ids, &b.attention_mask, &b.labels})
    if (t->defined()) *t = t->to(device_);
  return b;
}

// With several ranks, rank r evaluates batches r, r + world, ... (the very batches one
// process takes) and the logits are gathered, so every rank computes one process's metrics.
json Run::evaluate(int64_t batch_size, bool log, std::vector<std::vector<float>>* logits_out) {
  LOPPER_CHECK(dev_ != nullptr, "[evaluate] needs data.dev");
  NoGradGuard ng;
  model_->eval();
  for (auto& m : methods_) m.method->attach(*model_->bert, nullptr);  // deterministic masks
  std::optional<nn::BlockSparseScope> sparse;
  if (device_.is_cpu()) sparse.emplace(*model_, e_.block_sparse);
  const int64_t n = dev_->size(), world = comm_->size(), rank = comm_->rank();
  auto batches = data::epoch_batches(*dev_, batch_size, false, 0, 0);
  std::vector<int64_t> rows(world, 0);  // examples each rank evaluates
  for (size_t i = 0; i < batches.size(); ++i) rows[i % world] += static_cast<int64_t>(batches[i].size());
  const int64_t width = regression_ ? 1 : cfg_.num_labels, most = *std::max_element(rows.begin(), rows.end());
  Tensor mine = Tensor::full({most, 1 + width}, -1.0, DType::f64);  // (most, 1 + labels): example index, logits
  double* out = mine.data<double>();
  for (size_t i = rank; i < batches.size(); i += world) {
    data::Batch b = on_device(dev_->collate(batches[i]));
    auto logits = model_->forward(b.input_ids, b.token_type_ids, b.attention_mask).data().to_vector<float>();  // (B, width)
    for (size_t r = 0; r < batches[i].size(); ++r, out += 1 + width) {
      out[0] = static_cast<double>(batches[i][r]);
      std::copy(logits.begin() + r * width, logits.begin() + (r + 1) * width, out + 1);
    }
  }
  Tensor all = comm_->all_gather(mine);  // (world * most, 1 + width)
  std::vector<std::vector<float>> by_example(n);
  const double* a = all.data<double>();
  for (int64_t r = 0; r < all.size(0); ++r, a += 1 + width)
    if (a[0] >= 0) by_example[static_cast<size_t>(a[0])].assign(a + 1, a + 1 + width);
  std::vector<float> flat;
  for (const auto& l : by_example) {
    LOPPER_CHECK(static_cast<int64_t>(l.size()) == width, "[evaluate] an example was not evaluated");
    flat.insert(flat.end(), l.begin(), l.end());
  }
  Tensor logits = Tensor::from_vector<float>(flat, {n, width});  // (n, labels), in the dev set's order
  std::vector<double> pred = regression_ ? logits.reshape({-1}).to_vector<double>() : argmax(logits, -1).to_vector<double>();
  std::vector<double> label;
  if (logits_out) *logits_out = std::move(by_example);
  for (float l : dev_->labels()) label.push_back(l);
  json m = task_metrics(e_.data.task, pred, label, regression_);
  m["examples"] = n;
  if (sparse && sparse->sparse_count() > 0) m["block_sparse_linears"] = sparse->sparse_count();
  state_.last_eval = m;
  if (log) log_metrics({{"stage", state_.stage}, {"step", state_.step}, {"eval", m}});
  return m;
}

void Run::log_metrics(const json& j) {
  if (!writer()) return;
  std::ofstream f(out_ / "metrics.jsonl", std::ios::app);
  f << j.dump() << "\n";
}

void Run::validate() { load_inputs(); }

void run_experiment(const Experiment& e, const RunOptions& options) { Run(e, options).execute(); }
void validate_experiment(const Experiment& e) { Run(e, RunOptions{}).validate(); }

}  // namespace lopper::trainers
