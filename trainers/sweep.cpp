// Sweep files: reading, expanding into runs, each run's state, the sbatch script, the table.
#include "trainers/sweep.h"

#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "trainers/fields.h"
#include "trainers/runner.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A value as it appears in a run's name: 0.003, 32x32, true, a string as is.
std::string name_part(const json& v) {
  std::string s;
  if (v.is_array()) {
    for (const json& x : v) {  // piece by piece: GCC 12 warns falsely (-Wrestrict) on "x" + string
      if (!s.empty()) s += 'x';
      s += name_part(x);
    }
  } else {
    s = v.is_string() ? v.get<std::string>() : v.dump();
  }
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '+' && c != '_') c = '-';
  return s;
}

// The last component of a key path that is not a list index: stages.1.l0_penalty -> l0_penalty.
std::string short_key(const std::string& key) {
  std::string best = key, part;
  size_t start = 0;
  while (start <= key.size()) {
    size_t dot = key.find('.', start);
    part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!part.empty() && !std::all_of(part.begin(), part.end(), ::isdigit)) best = part;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return best;
}

using Values = std::vector<std::pair<std::string, json>>;

// An object of key -> value (set) or key -> non-empty list (grid, zip), checked.
std::vector<std::pair<std::string, json>> entries(const json& j, const std::string& path, bool lists) {
  LOPPER_CHECK(j.is_object(), path, ": expected an object of key -> ", lists ? "list of values" : "value", ", got ", j.dump());
  std::vector<std::pair<std::string, json>> out;
  for (auto& [k, v] : j.items()) {
    LOPPER_CHECK(!k.empty(), path, ": an empty key");
    LOPPER_CHECK(!v.is_null(), path, ".", k, ": null is not a value");
    if (lists) {
      LOPPER_CHECK(v.is_array(), path, ".", k, ": expected a list of values, got ", v.dump());
      LOPPER_CHECK(!v.empty(), path, ".", k, ": an empty list: the sweep would have no runs here");
    }
    out.emplace_back(k, v);
  }
  return out;
}

// The runs of one block of "runs": every combination of the grid's axes and the zip's
// rows (one axis whose values vary together), each with the block's fixed "set". Keys
// come in alphabetical order (JSON objects are unordered), in names as in overrides.
std::vector<SweepRun> expand_block(const json& b, const std::string& path, const Values& common) {
  Fields f(b, path);
  std::string name = f.str("name", "");
  Values fixed = common;
  for (auto& kv : entries(f.value("set", json::object()), join_path(path, "set"), false)) fixed.push_back(kv);
  auto grid = entries(f.value("grid", json::object()), join_path(path, "grid"), true);
  auto zip = entries(f.value("zip", json::object()), join_path(path, "zip"), true);
  f.finish();
  std::vector<Values> combos = {{}};  // varying values of each run of the block
  for (auto& [k, list] : grid) {
    std::vector<Values> next;
    for (const Values& c : combos)
      for (const json& v : list) {
        next.push_back(c);
        next.back().emplace_back(k, v);
      }
    combos = std::move(next);
  }
  if (!zip.empty()) {
    size_t n = zip[0].second.size();
    for (auto& [k, list] : zip)
      LOPPER_CHECK(list.size() == n, join_path(path, "zip"), ": lists that vary together must have one length; '", zip[0].first,
                   "' has ", n, ", '", k, "' has ", list.size());
    std::vector<Values> next;
    for (const Values& c : combos)
      for (size_t i = 0; i < n; ++i) {
        next.push_back(c);
        for (auto& [k, list] : zip) next.back().emplace_back(k, list[i]);
      }
    combos = std::move(next);
  }
  LOPPER_CHECK(!name.empty() || combos.size() > 1 || !combos[0].empty(), path,
               ": neither varies a key (grid, zip) nor has a name: give it a \"name\"");
  std::string series = name;
  for (auto* axes : {&grid, &zip})
    for (auto& [k, list] : *axes)
      if (name.empty()) {
        if (!series.empty()) series += ", ";
        series += short_key(k);
      }
  std::vector<SweepRun> runs;
  for (const Values& c : combos) {
    SweepRun r;
    r.series = series;
    r.origin = path + (grid.empty() && zip.empty() ? " (setting)" : grid.empty() ? " (zip)" : zip.empty() ? " (grid)" : " (grid x zip)");
    std::string generated;
    for (auto& [k, v] : c) {  // piece by piece: GCC 12 warns falsely (-Wrestrict) on "_" + string
      if (!generated.empty()) generated += '_';
      generated += name_part(json(short_key(k)));
      generated += '-';
      generated += name_part(v);
    }
    r.name = name.empty() ? generated : generated.empty() ? name : name + "_" + generated;
    r.values = fixed;
    for (auto& kv : c) r.values.push_back(kv);
    runs.push_back(std::move(r));
  }
  return runs;
}

SlurmSpec parse_slurm(const json& j) {
  Fields f(j, "slurm");
  SlurmSpec s;
  s.cpus_per_task = f.integer("cpus_per_task", s.cpus_per_task, 1, 4096, "1 or more");
  s.mem = f.str("mem", "");
  s.time = f.str("time", "");
  s.partition = f.str("partition", "");
  s.account = f.str("account", "");
  s.gpus_per_task = f.integer("gpus_per_task", 0, 0, 64, "0 or more");
  s.ranks = f.integer("ranks", 1, 1, 4096, "1 or more");
  s.max_parallel = f.integer("max_parallel", 0, 0, 1000000, "0 (no limit) or more");
  f.finish();
  return s;
}

// A word for a shell script: single-quoted.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

std::vector<std::string> SweepRun::overrides() const {
  std::vector<std::string> o;
  for (auto& [k, v] : values) o.push_back(k + "=" + v.dump());
  return o;
}

Sweep load_sweep(const std::string& path) {
  json j = read_json_strict(path, "sweep file");
  Sweep s;
  s.file = fs::absolute(path).lexically_normal().string();
  fs::path base = fs::path(s.file).parent_path();
  try {
    Fields f(j, "");
    s.name = f.str("name", fs::path(path).stem().string());
    s.experiment = (base / f.str("experiment", "", true)).lexically_normal().string();
    LOPPER_CHECK(fs::is_regular_file(s.experiment), "experiment: '", s.experiment, "' is not a file");
    s.output_dir = (base / f.str("output_dir", "", true)).lexically_normal();
    Values common = entries(f.value("set", json::object()), "set", false);
    json blocks = f.value("runs", json());
    LOPPER_CHECK(blocks.is_array() && !blocks.empty(), "runs: expected a non-empty list of blocks (grid, zip, set, name)",
                 blocks.is_null() ? "" : ", got " + blocks.dump());
    for (size_t i = 0; i < blocks.size(); ++i)
      for (SweepRun& r : expand_block(blocks[i], "runs." + std::to_string(i), common)) s.runs.push_back(std::move(r));
    json local = f.value("local", json::object());
    Fields l(local, "local");
    s.jobs = l.integer("jobs", 1, 1, 1024, "1 or more");
    s.threads = l.integer("threads", 0, 0, 4096, "0 (the cores split between the jobs) or more");
    l.finish();
    s.slurm = parse_slurm(f.value("slurm", json::object()));
    for (auto& [name, dir] : entries(f.value("baselines", json::object()), "baselines", false)) {
      LOPPER_CHECK(dir.is_string(), "baselines.", name, ": expected a run folder, got ", dir.dump());
      s.baselines.emplace_back(name, (base / dir.get<std::string>()).lexically_normal());
    }
    f.finish();
    std::map<std::string, std::string> seen;  // name -> origin
    for (const SweepRun& r : s.runs) {
      for (auto& [k, v] : r.values)
        LOPPER_CHECK(k != "output_dir", r.origin, ": sets output_dir, which the sweep gives each run (", s.output_dir.string(),
                     "/<run name>)");
      auto [it, fresh] = seen.emplace(r.name, r.origin);
      LOPPER_CHECK(fresh, "two runs would be named '", r.name, "' (", it->second, " and ", r.origin,
                   "): give the blocks distinct \"name\"s or vary other values");
    }
  } catch (const Error& e) {
    LOPPER_FAIL(path, ": ", e.what());
  }
  return s;
}

void validate_sweep(const Sweep& s) {
  for (const SweepRun& r : s.runs) {
    std::vector<std::string> o = r.overrides();
    o.push_back("output_dir=" + json(s.run_dir(r).string()).dump());
    try {
      validate_experiment(load_experiment(s.experiment, o));
    } catch (const Error& e) {
      std::string values;
      for (auto& [k, v] : r.values) values += (values.empty() ? "" : ", ") + k + " = " + v.dump();
      LOPPER_FAIL(s.file, ": run '", r.name, "' (", r.origin, ": ", values, "): ", e.what());
    }
  }
}

const char* status_name(RunStatus s) {
  switch (s) {
    case RunStatus::not_started: return "not started";
    case RunStatus::interrupted: return "interrupted";
    case RunStatus::failed: return "failed";
    case RunStatus::done: return "done";
  }
  return "?";
}

RunStatus run_status(const Sweep& s, const SweepRun& r) {
  fs::path d = s.run_dir(r);
  if (fs::exists(d / "summary.json")) return RunStatus::done;
  if (fs::exists(d / "sweep_failed.json")) return RunStatus::failed;
  if (fs::exists(d / "checkpoints" / "LATEST")) return RunStatus::interrupted;
  return RunStatus::not_started;
}

std::vector<std::string> run_arguments(const Sweep& s, const SweepRun& r, int64_t threads) {
  std::vector<std::string> a = {s.experiment};
  for (const std::string& o : r.overrides()) a.insert(a.end(), {"--set", o});
  a.insert(a.end(), {"--set", "output_dir=" + json(s.run_dir(r).string()).dump()});
  if (threads > 0) a.insert(a.end(), {"--threads", std::to_string(threads)});
  a.push_back(fs::exists(s.run_dir(r) / "checkpoints" / "LATEST") ? "--resume" : "--overwrite");
  return a;
}

std::string sbatch_script(const Sweep& s, const std::vector<size_t>& todo, const std::string& finetune_prune) {
  LOPPER_CHECK(!todo.empty(), s.file, ": every run is done: nothing to submit");
  const SlurmSpec& sl = s.slurm;
  std::string array;
  for (size_t i : todo) {
    if (!array.empty()) array += ',';
    array += std::to_string(i);
  }
  if (sl.max_parallel > 0) array += "%" + std::to_string(sl.max_parallel);
  std::string t = "#!/bin/bash\n# Written by `sweep slurm` from " + s.file + ": one array task per run not yet done.\n";
  t += "#SBATCH --job-name=" + s.name + "\n#SBATCH --array=" + array + "\n";
  t += "#SBATCH --ntasks=" + std::to_string(sl.ranks) + "\n#SBATCH --cpus-per-task=" + std::to_string(sl.cpus_per_task) + "\n";
  if (sl.gpus_per_task > 0) t += "#SBATCH --gpus-per-task=" + std::to_string(sl.gpus_per_task) + "\n";
  if (!sl.mem.empty()) t += "#SBATCH --mem=" + sl.mem + "\n";
  if (!sl.time.empty()) t += "#SBATCH --time=" + sl.time + "\n";
  if (!sl.partition.empty()) t += "#SBATCH --partition=" + sl.partition + "\n";
  if (!sl.account.empty()) t += "#SBATCH --account=" + sl.account + "\n";
  t += "#SBATCH --output=" + (s.output_dir / "slurm-%A_%a.out").string() + "\n";
  t += "set -euo pipefail\nexport OMP_NUM_THREADS=" + std::to_string(sl.cpus_per_task) + "\n";
  t += "case \"$SLURM_ARRAY_TASK_ID\" in\n";
  for (size_t i : todo) {
    const SweepRun& r = s.runs[i];
    fs::path d = s.run_dir(r);
    std::string cmd = sl.ranks > 1 ? "srun --mpi=pmix " : "";
    cmd += shell_quote(finetune_prune) + " " + shell_quote(s.experiment);
    for (const std::string& o : r.overrides()) cmd += " --set " + shell_quote(o);
    cmd += " --set " + shell_quote("output_dir=" + json(d.string()).dump()) + " --threads " + std::to_string(sl.cpus_per_task);
    t += "  " + std::to_string(i) + ")  # " + r.name + "\n";
    t += "    dir=" + shell_quote(d.string()) + "\n    mkdir -p \"$dir\"\n";
    t += "    if [ -f \"$dir/summary.json\" ]; then echo \"" + r.name + ": done already\"; exit 0; fi\n";
    t += "    rm -f \"$dir/sweep_failed.json\"\n";
    t += "    resume=--overwrite; [ -f \"$dir/checkpoints/LATEST\" ] && resume=--resume\n";
    // A failure is recorded for `sweep collect` (the message is in the task's slurm-*.out).
    t += "    " + cmd + " \"$resume\" || { rc=$?; printf '{\"exit\": %d, \"where\": \"slurm\"}\\n' \"$rc\" > \"$dir/sweep_failed.json\"; exit \"$rc\"; } ;;\n";
  }
  t += "  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n";
  return t;
}

std::vector<SweepRow> sweep_rows(const Sweep& s) {
  auto summary = [](const fs::path& dir) {
    std::ifstream f(dir / "summary.json");
    try {
      return json::parse(f);
    } catch (const json::exception& e) {
      LOPPER_FAIL((dir / "summary.json").string(), ": missing or damaged (", e.what(), ")");
    }
  };
  std::vector<SweepRow> rows;
  for (const SweepRun& r : s.runs) {
    SweepRow row{r.name, r.series, s.run_dir(r), run_status(s, r), json::object(), json()};
    for (auto& [k, v] : r.values) row.values[k] = v;
    if (row.status == RunStatus::done) row.summary = summary(row.dir);
    rows.push_back(std::move(row));
  }
  for (auto& [name, dir] : s.baselines) {
    LOPPER_CHECK(fs::exists(dir / "summary.json"), s.file, ": baselines.", name, ": '", dir.string(),
                 "' holds no summary.json (run it first)");
    rows.push_back({name, "baseline", dir, RunStatus::done, json::object(), summary(dir)});
  }
  return rows;
}

}  // namespace lopper::trainers
