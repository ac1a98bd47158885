// sweep: runs a sweep file's experiments (docs/sweeps.md) here as a bounded queue of
// finetune_prune processes, or writes (and submits) one Slurm job array, and collects the
// results into a table and Pareto plots.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "apps/cli.h"
#include "core/error.h"
#include "nn/safetensors.h"
#include "trainers/sweep.h"

using namespace lopper;
using trainers::RunStatus;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// A program beside this one (apps/finetune_prune) or in the build's bench/ folder.
fs::path sibling(const std::string& rel) {
  return (fs::read_symlink("/proc/self/exe").parent_path() / rel).lexically_normal();
}

// The exit status of a shell command and its standard output.
std::pair<int, std::string> capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  LOPPER_CHECK(p != nullptr, "cannot run '", cmd, "'");
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

// The line that says why a run failed: its last "error:" line, else its last line.
std::string last_error(const fs::path& log) {
  std::ifstream f(log);
  std::string line, last, error;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.find("error:") != std::string::npos) error = line;
  }
  return error.empty() ? last : error;
}

void print_plan(const trainers::Sweep& s) {
  std::printf("%s: %zu runs from %s, into %s\n", s.file.c_str(), s.runs.size(), s.experiment.c_str(), s.output_dir.c_str());
  for (const auto& r : s.runs) {
    std::printf("  %-40s %-12s", r.name.c_str(), trainers::status_name(trainers::run_status(s, r)));
    for (const std::string& o : r.overrides()) std::printf(" --set %s", o.c_str());
    std::printf("\n");
  }
}

// ---- local: at most `jobs` finetune_prune processes at a time ----

int run_local(const trainers::Sweep& s, int64_t jobs, int64_t threads, const fs::path& finetune_prune) {
  std::deque<size_t> todo;
  size_t done = 0, failed = 0;
  for (size_t i = 0; i < s.runs.size(); ++i) {
    RunStatus st = trainers::run_status(s, s.runs[i]);
    if (st == RunStatus::done) ++done;
    else todo.push_back(i);  // failed ones are tried again: the cause may be fixed
  }
  if (threads == 0) threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / jobs);
  std::fprintf(stderr, "sweep %s: %zu runs, %zu done, %zu to run, %lld at a time x %lld threads\n", s.name.c_str(),
               s.runs.size(), done, todo.size(), static_cast<long long>(jobs), static_cast<long long>(threads));
  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: waitpid returns EINTR
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::map<pid_t, size_t> running;
  auto progress = [&] {
    std::fprintf(stderr, "sweep %s: %zu done, %zu running, %zu failed, %zu left\n", s.name.c_str(), done, running.size(),
                 failed, todo.size());
  };
  bool stopping = false;
  while (!running.empty() || (!todo.empty() && !stopping)) {
    while (!stopping && !todo.empty() && static_cast<int64_t>(running.size()) < jobs) {
      size_t i = todo.front();
      todo.pop_front();
      const auto& r = s.runs[i];
      fs::create_directories(s.run_dir(r));
      fs::remove(s.run_dir(r) / "sweep_failed.json");
      std::vector<std::string> args = trainers::run_arguments(s, r, threads);
      fs::path log = s.run_dir(r) / "finetune_prune.log";
      pid_t parent = ::getpid();
      pid_t pid = ::fork();
      LOPPER_CHECK(pid >= 0, "fork failed: ", std::strerror(errno));
      if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // if the sweep dies, the run checkpoints and stops
        if (::getppid() != parent) ::_exit(1);
        ::signal(SIGINT, SIG_IGN);  // a Ctrl-C reaches the run through the sweep's SIGTERM
        FILE* f = std::freopen(log.c_str(), "a", stderr);
        if (!f || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) ::_exit(127);
        std::vector<char*> argv = {const_cast<char*>(finetune_prune.c_str())};
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(finetune_prune.c_str(), argv.data());
        std::fprintf(stderr, "sweep: cannot run %s: %s\n", finetune_prune.c_str(), std::strerror(errno));
        ::_exit(127);
      }
      running[pid] = i;
      std::fprintf(stderr, "sweep %s: started %s%s (log %s)\n", s.name.c_str(), r.name.c_str(),
                   args.back() == "--resume" ? " (resuming)" : "", log.c_str());
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    LOPPER_CHECK(pid >= 0 || errno == EINTR, "waitpid failed: ", std::strerror(errno));
    // A signal that came while a run was starting, or one that interrupted the wait.
    if (g_stop && !stopping) {
      stopping = true;
      std::fprintf(stderr, "sweep %s: stopping: each running run saves a checkpoint; start the sweep again to go on\n",
                   s.name.c_str());
      for (auto& [p, i] : running) ::kill(p, SIGTERM);
    }
    if (pid < 0) continue;
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const auto& r = s.runs[it->second];
    running.erase(it);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 && trainers::run_status(s, r) == RunStatus::done) {
      ++done;
      std::fprintf(stderr, "sweep %s: %s done\n", s.name.c_str(), r.name.c_str());
    } else if (code == 130 && stopping) {
      std::fprintf(stderr, "sweep %s: %s stopped at a checkpoint\n", s.name.c_str(), r.name.c_str());
    } else {
      ++failed;
      std::string why = last_error(s.run_dir(r) / "finetune_prune.log");
      std::ofstream(s.run_dir(r) / "sweep_failed.json") << json{{"exit", code}, {"error", why}}.dump() << "\n";
      std::fprintf(stderr, "sweep %s: %s failed (exit %d): %s\n", s.name.c_str(), r.name.c_str(), code, why.c_str());
    }
    progress();
  }
  if (stopping) return 130;
  return failed > 0 ? 1 : 0;
}

// ---- slurm: one job array ----

int run_slurm(const trainers::Sweep& s, bool submit, const fs::path& finetune_prune) {
  std::vector<size_t> todo;
  for (size_t i = 0; i < s.runs.size(); ++i)
    if (trainers::run_status(s, s.runs[i]) != RunStatus::done) todo.push_back(i);
  if (todo.empty()) {
    std::fprintf(stderr, "sweep %s: every run is done; nothing to submit\n", s.name.c_str());
    return 0;
  }
  std::string script = trainers::sbatch_script(s, todo, finetune_prune.string());
  fs::create_directories(s.output_dir);
  fs::path file = s.output_dir / "sweep.sbatch";
  std::ofstream(file) << script;
  std::fprintf(stderr, "sweep %s: %zu of %zu runs in %s\n", s.name.c_str(), todo.size(), s.runs.size(), file.c_str());
  if (!submit) {
    std::printf("%s\n", file.c_str());
    return 0;
  }
  LOPPER_CHECK(capture("command -v sbatch").first == 0, "slurm --submit: 'sbatch' is not on PATH (is this a Slurm ",
               "login node?); the script is written: ", file.string(), ", submit it where Slurm is");
  auto [code, out] = capture("sbatch --parsable '" + file.string() + "'");
  LOPPER_CHECK(code == 0, "sbatch failed (exit ", code, "): ", out);
  std::string id = out.substr(0, out.find_first_of(";\n"));
  std::printf("%s\n", id.c_str());
  std::fprintf(stderr, "sweep %s: submitted job array %s\n", s.name.c_str(), id.c_str());
  return 0;
}

// ---- collect: table and Pareto plots ----

// Forward latency (ms) of each done run's exported model, at batch 1 and 32 and the
// sequence length its summary measured at: `rounds` interleaved passes over the models
// (so no model gets a quieter moment than another), median per model.
std::map<std::string, std::pair<double, double>> measure_latency(const std::vector<trainers::SweepRow>& rows, int rounds,
                                                                 int threads) {
  fs::path bench = sibling("../bench/bench_bert");
  LOPPER_CHECK(fs::exists(bench), "collect: ", bench.string(), " not found (build bench_bert, or pass --no-latency)");
  std::map<std::string, std::vector<double>> b1, b32;
  for (int round = 0; round < rounds; ++round)
    for (const auto& row : rows) {
      if (row.status != RunStatus::done || !fs::exists(row.dir / "model" / "config.json")) continue;
      int64_t seq = row.summary["latency_ms"].value("seq_len", 32);
      // As the run evaluated: Linears sparse enough in blocks through the block-sparse matmul.
      double sparse = 0;
      std::ifstream cfg(row.dir / "config.resolved.json");
      if (cfg.good()) sparse = json::parse(cfg, nullptr, false).value("/block_sparse/max_density"_json_pointer, 0.0);
      for (int batch : {1, 32}) {
        std::string cmd = bench.string() + " --model '" + (row.dir / "model").string() + "' --batch " +
                          std::to_string(batch) + " --seq " + std::to_string(seq) + " --iters " + (batch == 1 ? "50" : "10") +
                          " --block-sparse " + std::to_string(sparse) +
                          (threads > 0 ? " --threads " + std::to_string(threads) : "") + " 2>/dev/null";
        auto [code, out] = capture(cmd);
        LOPPER_CHECK(code == 0, "collect: '", cmd, "' failed (exit ", code, ")");
        double ms = 1e3 * json::parse(out).at("seconds_per_step").get<double>();
        (batch == 1 ? b1 : b32)[row.name].push_back(ms);
      }
    }
  std::map<std::string, std::pair<double, double>> out;
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (auto& [name, v] : b1) out[name] = {median(v), median(b32[name])};
  return out;
}

// Non-zero entries of the encoder's weight matrices in an exported model: what is left
// after heads and neurons are removed and weights zeroed (movement pruning).
int64_t encoder_weights_left(const fs::path& model_dir) {
  fs::path f = model_dir / "model.safetensors";
  if (!fs::exists(f)) return -1;
  int64_t n = 0;
  for (auto& [name, t] : nn::load_safetensors(f.string()).tensors) {
    if (name.find("encoder.") == std::string::npos || t.dim() != 2) continue;
    for (float v : t.to_vector<float>()) n += v != 0.0f;
  }
  return n;
}

// Indices of the points on the Pareto front: no other point has a cost <= and a score >=
// with one of them strictly better. Sorted by cost.
std::vector<size_t> pareto_front(const std::vector<double>& cost, const std::vector<double>& score) {
  std::vector<size_t> front;
  for (size_t i = 0; i < cost.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < cost.size() && !dominated; ++j)
      dominated = j != i && cost[j] <= cost[i] && score[j] >= score[i] && (cost[j] < cost[i] || score[j] > score[i]);
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return cost[a] < cost[b]; });
  return front;
}

struct Point {
  std::string name, series;
  double accuracy, flops, latency;
};

// accuracy against a cost, one series per block of the sweep file, the front as a line;
// PNG and SVG through gnuplot.
void plot(const fs::path& dir, const std::vector<Point>& pts, bool latency, const std::string& metric) {
  std::string stem = latency ? "pareto_latency" : "pareto_flops";
  std::vector<double> cost, score;
  for (const Point& p : pts) {
    cost.push_back(latency ? p.latency : p.flops / 1e9);
    score.push_back(100 * p.accuracy);
  }
  fs::path data = dir / (stem + ".dat");
  std::ofstream d(data);
  std::vector<std::string> series;
  for (const Point& p : pts)
    if (std::find(series.begin(), series.end(), p.series) == series.end()) series.push_back(p.series);
  for (const std::string& name : series) {  // one gnuplot data block per series
    d << "# " << name << "\n";
    for (size_t i = 0; i < pts.size(); ++i)
      if (pts[i].series == name) d << cost[i] << " " << score[i] << " \"" << pts[i].name << "\"\n";
    d << "\n\n";
  }
  d << "# front\n";
  for (size_t i : pareto_front(cost, score)) d << cost[i] << " " << score[i] << "\n";
  d.close();
  std::string xlabel = latency ? "forward latency, batch 1 (ms)" : "FLOPs per sequence (GFLOPs)";
  for (const char* term : {"png", "svg"}) {
    std::string g = std::string("set terminal ") + (std::string(term) == "png" ? "pngcairo size 1000,700" : "svg size 1000,700") +
                    "\nset output '" + (dir / (stem + "." + term)).string() + "'\n";
    g += "set xlabel '" + xlabel + "'\nset ylabel 'dev " + metric + " (%)'\nset grid\nset key outside below noenhanced\n";
    g += "set offsets graph 0.05, graph 0.2, graph 0.08, graph 0.05\n";  // room for the labels
    g += "set bmargin 6\n";  // the key below the x label
    g += "set title 'accuracy against " + std::string(latency ? "latency" : "FLOPs") + " (Pareto front: line)'\n";
    g += "plot ";
    // Okabe and Ito's colours (distinct on white and to colour-blind eyes), and a shape per series.
    const char* colours[] = {"#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"};
    const int shapes[] = {7, 5, 9, 11, 13, 15};
    for (size_t k = 0; k < series.size(); ++k)
      g += "'" + data.string() + "' index " + std::to_string(k) + " using 1:2 with points pt " + std::to_string(shapes[k % 6]) +
           " ps 1.5 lc rgb '" + colours[k % 8] + "' title '" + series[k] + "', '' index " + std::to_string(k) +
           " using 1:2:3 with labels offset 0,1 font ',8' noenhanced notitle, ";
    g += "'' index " + std::to_string(series.size()) + " using 1:2 with lines lw 2 lc rgb 'black' title 'Pareto front'\n";
    fs::path gp = dir / (stem + ".gp");
    std::ofstream(gp) << g;
    auto [code, out] = capture("gnuplot '" + gp.string() + "' 2>&1");
    LOPPER_CHECK(code == 0, "collect: gnuplot failed on ", gp.string(), ": ", out);
  }
}

int run_collect(const trainers::Sweep& s, bool latency, int rounds, int threads) {
  auto rows = trainers::sweep_rows(s);
  std::map<std::string, std::pair<double, double>> lat;
  if (latency) lat = measure_latency(rows, rounds, threads);
  std::vector<std::string> keys;  // every key any run sets, in first-seen order
  for (const auto& r : s.runs)
    for (auto& [k, v] : r.values)
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  std::string metric = "accuracy";
  for (const auto& row : rows)
    if (row.status == RunStatus::done) metric = row.summary["best"].value("metric", metric);
  std::vector<std::string> cols = {"run", "state"};
  cols.insert(cols.end(), keys.begin(), keys.end());
  for (const char* c : {"dev metric", "heads", "ffn neurons", "parameters", "encoder weights left", "GFLOPs",
                        "latency b1 (ms)", "latency b32 (ms)", "wall (min)"})
    cols.push_back(c);
  std::ofstream md(s.output_dir / "table.md"), csv(s.output_dir / "table.csv");
  md << "Sweep " << s.name << " (" << s.file << "); dev metric: " << metric
     << (latency ? "; latency re-measured, " + std::to_string(rounds) + " interleaved rounds, median" : "; latency from each run")
     << "\n\n|";
  for (const auto& c : cols) {
    md << " " << c << " |";
    csv << (c == cols.front() ? "" : ",") << '"' << c << '"';
  }
  md << "\n|";
  for (size_t i = 0; i < cols.size(); ++i) md << " --- |";
  md << "\n";
  csv << "\n";
  std::vector<Point> pts;
  size_t done = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    std::vector<std::string> cells = {row.name, trainers::status_name(row.status)};
    for (const auto& k : keys) cells.push_back(row.values.contains(k) ? row.values[k].dump() : "");
    if (row.status == RunStatus::done) {
      ++done;
      const json& sm = row.summary;
      double acc = sm["final_eval"].value(metric, NAN);
      int64_t ffn = 0;
      for (auto& n : sm["intermediate_sizes"]) ffn += n.get<int64_t>();
      double b1 = sm["latency_ms"].value("batch_1", NAN), b32 = sm["latency_ms"].value("batch_32", NAN);
      if (lat.count(row.name)) std::tie(b1, b32) = lat[row.name];
      double gflops = sm["flops"].value("total", NAN) / 1e9;
      char buf[64];
      auto fmt = [&](const char* f, double v) { return std::snprintf(buf, sizeof buf, f, v), std::string(buf); };
      int64_t left = encoder_weights_left(row.dir / "model");
      cells.insert(cells.end(), {fmt("%.4f", acc), std::to_string(sm.value("heads", 0)), std::to_string(ffn),
                                 std::to_string(sm.value("parameters", 0)), left < 0 ? "" : std::to_string(left),
                                 fmt("%.3f", gflops), fmt("%.2f", b1),
                                 fmt("%.2f", b32), fmt("%.1f", sm.value("wall_seconds", 0.0) / 60)});
      pts.push_back({row.name, row.series, acc, gflops * 1e9, b1});
    } else {
      std::string why;
      if (row.status == RunStatus::failed) {
        std::ifstream f(row.dir / "sweep_failed.json");
        why = json::parse(f, nullptr, false).value("error", "");
      }
      cells.insert(cells.end(), {why, "", "", "", "", "", "", "", ""});
    }
    md << "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      // A long swept value (a whole stages list) is cut in table.md, whole in table.csv.
      bool value = c >= 2 && c < 2 + keys.size() && cells[c].size() > 40;
      md << " " << (value ? cells[c].substr(0, 37) + "..." : cells[c]) << " |";
      std::string q;  // CSV: quotes doubled inside quotes
      for (char ch : cells[c]) q += ch == '"' ? std::string(2, '"') : std::string(1, ch);
      csv << (c ? "," : "") << '"' << q << '"';
    }
    md << "\n";
    csv << "\n";
  }
  md.close();
  csv.close();
  std::fprintf(stderr, "sweep %s: %zu of %zu runs done; %s, %s\n", s.name.c_str(), done, rows.size(),
               (s.output_dir / "table.md").c_str(), (s.output_dir / "table.csv").c_str());
  if (pts.size() >= 1) {
    LOPPER_CHECK(capture("command -v gnuplot").first == 0, "collect: the tables are written, but 'gnuplot' is not on PATH ",
                 "for the plots (Debian: gnuplot-nox, which scripts/install_deps.sh installs)");
    plot(s.output_dir, pts, false, metric);
    plot(s.output_dir, pts, true, metric);
    std::fprintf(stderr, "sweep %s: %s/pareto_{flops,latency}.{png,svg}\n", s.name.c_str(), s.output_dir.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Runs the experiments of a sweep file (a base experiment and the keys it varies): here as a bounded "
               "queue, or on Slurm as one job array; then collects them into a table and Pareto plots.",
               "sweep"};
  std::string file;
  app.add_option("sweep_file", file, "the sweep file (JSON; docs/sweeps.md)")->required()->check(CLI::ExistingFile);
  std::string ft = sibling("finetune_prune").string();
  app.add_option("--finetune-prune", ft, "the finetune_prune binary (default: the one beside this program)");
  app.require_subcommand(1);
  auto* plan = app.add_subcommand("plan", "list the runs, their state and overrides; validate every run");
  auto* local = app.add_subcommand("local", "run here, at most --jobs at a time; again: finishes what is left");
  int64_t jobs = 0, threads = 0;
  local->add_option("--jobs", jobs, "runs at a time (default: the sweep file's local.jobs)")->check(apps::at_least(1));
  local->add_option("--threads", threads, "threads per run (default: local.threads, else the cores split)")
      ->check(apps::at_least(1));
  auto* slurm = app.add_subcommand("slurm", "write output_dir/sweep.sbatch, one array task per run not done");
  bool submit = false;
  slurm->add_flag("--submit", submit, "submit it with sbatch and print the job id");
  // Per-task resources: the sweep file's "slurm" block, or these (which win).
  trainers::SlurmSpec flags{0, "", "", "", "", -1, 0, -1};
  slurm->add_option("--cpus-per-task", flags.cpus_per_task, "CPUs per run (and its threads)")->check(apps::at_least(1));
  slurm->add_option("--mem", flags.mem, "memory per run, as sbatch takes it (8G)");
  slurm->add_option("--time", flags.time, "time limit per run (HH:MM:SS)");
  slurm->add_option("--partition", flags.partition, "partition");
  slurm->add_option("--account", flags.account, "account");
  slurm->add_option("--gpus-per-task", flags.gpus_per_task, "GPUs per run")->check(apps::at_least(0));
  slurm->add_option("--ranks", flags.ranks, "MPI ranks per run (srun --mpi=pmix)")->check(apps::at_least(1));
  slurm->add_option("--max-parallel", flags.max_parallel, "array tasks at once (0: no limit)")->check(apps::at_least(0));
  auto* collect = app.add_subcommand("collect", "table.md, table.csv and Pareto plots (PNG, SVG) in output_dir");
  bool no_latency = false;
  int rounds = 3, bench_threads = 0;
  collect->add_flag("--no-latency", no_latency, "use each run's own latency instead of re-measuring");
  collect->add_option("--rounds", rounds, "interleaved latency rounds")->check(apps::at_least(1));
  collect->add_option("--bench-threads", bench_threads, "threads for the latency measurements (0: all)")
      ->check(apps::at_least(0));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    trainers::Sweep s = trainers::load_sweep(file);
    if (*collect) return run_collect(s, !no_latency, rounds, bench_threads);
    LOPPER_CHECK(fs::exists(ft), "--finetune-prune: '", ft, "' not found");
    trainers::validate_sweep(s);  // every run, before anything starts
    if (*plan) {
      print_plan(s);
      return 0;
    }
    if (*local) return run_local(s, jobs > 0 ? jobs : s.jobs, threads > 0 ? threads : s.threads, ft);
    trainers::SlurmSpec& sl = s.slurm;
    if (flags.cpus_per_task > 0) sl.cpus_per_task = flags.cpus_per_task;
    for (auto [from, to] : {std::pair{&flags.mem, &sl.mem}, {&flags.time, &sl.time}, {&flags.partition, &sl.partition},
                            {&flags.account, &sl.account}})
      if (!from->empty()) *to = *from;
    if (flags.gpus_per_task >= 0) sl.gpus_per_task = flags.gpus_per_task;
    if (flags.ranks > 0) sl.ranks = flags.ranks;
    if (flags.max_parallel >= 0) sl.max_parallel = flags.max_parallel;
    return run_slurm(s, submit, ft);
  } catch (const std::exception& ex) {
    return apps::report_error(app, ex, verbose);
  }
}
