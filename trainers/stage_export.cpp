// export: the model as it is now (after any pruning) as a Hugging Face folder:
// model.safetensors, config.json with labels, and the tokenizer files.
#include "nn/safetensors.h"
#include "trainers/run.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace fs = std::filesystem;

namespace {
struct ExportOptions : StageOptions {
  std::string format = "safetensors";
};
}  // namespace

StageKind export_stage() {
  StageKind k;
  k.name = "export";
  k.doc = "write output_dir/model: model.safetensors, config.json and tokenizer files that transformers loads";
  k.parse = [](Fields& s, const Experiment&) {
    auto o = std::make_shared<ExportOptions>();
    o->format = s.choice("format", "safetensors", {"safetensors"});
    return o;
  };
  k.run = [](Run& run, const StageSpec&) {
    if (!run.writer()) return;  // rank 0 writes for every rank
    fs::path dir = run.out() / "model", tmp = run.out() / "model.tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nn::save_safetensors((tmp / "model.safetensors").string(), run.model().state_dict(), {{"format", "pt"}});
    const nn::BertConfig& c = run.model().config();  // after any pruning
    nlohmann::json j = c.to_json();
    j["architectures"] = {"BertForSequenceClassification"};
    nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
    const auto& names = run.task().label_names;
    for (int64_t i = 0; i < c.num_labels; ++i) {
      std::string n = i < static_cast<int64_t>(names.size()) ? names[i] : "LABEL_" + std::to_string(i);
      id2label[std::to_string(i)] = n;
      label2id[n] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
    if (run.regression()) j["problem_type"] = "regression";
    if (!run.state().sparsity.is_null()) j["lopper_sparsity"] = run.state().sparsity;  // zeros in place; loads dense
    // The attention rule cannot be said in stock transformers (it loads as dense attention).
    const nlohmann::json& pr = run.state().pruning;
    if (pr.contains("attention_prune") && pr["attention_prune"].contains("rule"))
      j["lopper_attention_pruning"] = pr["attention_prune"]["rule"];
    write_atomic(tmp / "config.json", j.dump(2) + "\n");
    fs::path src = run.experiment().model.path;
    for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "spiece.model"})
      if (fs::exists(src / f)) fs::copy_file(src / f, tmp / f);
    fs::remove_all(dir);
    fs::rename(tmp, dir);
    std::fprintf(stderr, "export: %s\n", dir.string().c_str());
  };
  return k;
}

}  // namespace lopper::trainers
