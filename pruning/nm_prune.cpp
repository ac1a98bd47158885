// N:M pruning of a BERT's encoder Linears: selection by name, channel permutations, masks.
#include "pruning/nm_prune.h"

#include <cmath>
#include <regex>

#include "core/ops.h"

namespace lopper::pruning {

using json = nlohmann::json;

std::vector<EncoderLinear> encoder_linears(const nn::BertConfig& c) {
  std::vector<EncoderLinear> r;
  const int64_t H = c.hidden_size, d = c.head_dim();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t A = c.heads_per_layer[l] * d, I = c.intermediate_sizes[l];
    for (LayerLinear x : kLayerLinears) {
      Shape s = x == LayerLinear::attention_output ? Shape{H, A}
                : x == LayerLinear::intermediate   ? Shape{I, H}
                : x == LayerLinear::output         ? Shape{H, I}
                                                   : Shape{A, H};
      r.push_back({"bert.encoder.layer." + std::to_string(l) + "." + layer_linear_path(x), l, x, s});
    }
  }
  return r;
}

std::vector<EncoderLinear> select_linears(const nn::BertConfig& c, const NmPruneOptions& o) {
  check_pattern(o.pattern);
  LOPPER_CHECK(o.dense_fraction >= 0 && o.dense_fraction < 1, "dense_fraction: ", o.dense_fraction,
               " is outside [0, 1)");
  LOPPER_CHECK(!o.permute || o.pattern.kind == NmKind::one_d,
               "permute: the permutation search is for 1d N:M patterns (of weights, vectors or blocks), not for ",
               o.pattern.kind == NmKind::two_d ? "2d N:M" : "unstructured selection");
  const std::vector<EncoderLinear> all = encoder_linears(c);
  std::vector<std::regex> res;
  for (size_t i = 0; i < o.modules.size(); ++i) {
    try {
      res.emplace_back(o.modules[i]);
    } catch (const std::regex_error& e) {
      LOPPER_FAIL("modules[", i, "]: '", o.modules[i], "' is not a regular expression (", e.what(), ")");
    }
    bool any = false;
    for (const EncoderLinear& x : all) any = any || std::regex_search(x.name, res.back());
    LOPPER_CHECK(any, "modules[", i, "]: '", o.modules[i], "' matches no encoder Linear (their names look like ",
                 all.front().name, ")");
  }
  const int64_t first = std::llround(o.dense_fraction * static_cast<double>(c.num_hidden_layers));
  std::vector<EncoderLinear> r;
  for (const EncoderLinear& x : all) {
    bool chosen = res.empty();
    for (const std::regex& re : res) chosen = chosen || std::regex_search(x.name, re);
    if (!chosen || x.layer < first) continue;
    check_fits(o.pattern, x.shape[0], x.shape[1], x.name);
    r.push_back(x);
  }
  LOPPER_CHECK(!r.empty(), "dense_fraction: ", o.dense_fraction, " keeps the first ", first, " of ",
               c.num_hidden_layers, " layers dense, and with them every Linear the modules select");
  return r;
}

namespace {

// v's entries reordered along dim: perm[k] is the original index now at k.
void reorder(const Variable& v, int64_t dim, const std::vector<int64_t>& perm) {
  v.mutable_data() = take(v.data(), dim, perm);
}

void check_perm(const std::vector<int64_t>& perm, int64_t size, const char* what) {
  std::vector<bool> seen(size, false);
  bool ok = static_cast<int64_t>(perm.size()) == size;
  for (size_t k = 0; ok && k < perm.size(); ++k) {
    ok = perm[k] >= 0 && perm[k] < size && !seen[perm[k]];
    if (ok) seen[perm[k]] = true;
  }
  LOPPER_CHECK(ok, "[", what, "] not a permutation of ", size, " channels");
}

// A permutation of unit columns (each `width` channels) as a permutation of channels.
std::vector<int64_t> channels(const std::vector<int64_t>& units, int64_t width) {
  std::vector<int64_t> ch(units.size() * width);
  for (size_t k = 0; k < units.size(); ++k)
    for (int64_t t = 0; t < width; ++t) ch[k * width + t] = units[k] * width + t;
  return ch;
}

}  // namespace

void permute_hidden(nn::BertModel& model, const std::vector<nn::Linear*>& hidden_readers,
                    const std::vector<int64_t>& perm) {
  check_perm(perm, model.config.hidden_size, "permute_hidden");
  nn::BertEmbeddings& e = *model.embeddings;
  for (auto* emb : {e.word_embeddings.get(), e.position_embeddings.get(), e.token_type_embeddings.get()})
    reorder(emb->weight, 1, perm);
  auto norm = [&](nn::LayerNorm& n) {
    reorder(n.weight, 0, perm);
    reorder(n.bias, 0, perm);
  };
  auto writes = [&](nn::BertOutput& o) {  // a projection onto the residual stream and its LayerNorm
    reorder(o.dense->weight, 0, perm);
    if (o.dense->bias.defined()) reorder(o.dense->bias, 0, perm);
    norm(*o.layer_norm);
  };
  norm(*e.layer_norm);
  for (int64_t l = 0; l < model.config.num_hidden_layers; ++l) {
    nn::BertLayer& L = (*model.encoder->layer)[l];
    for (LayerLinear x : {LayerLinear::query, LayerLinear::key, LayerLinear::value, LayerLinear::intermediate})
      reorder(layer_linear(model, l, x).weight, 1, perm);
    writes(*L.attention->output);
    writes(*L.output);
  }
  if (model.pooler) reorder(model.pooler->dense->weight, 1, perm);
  for (nn::Linear* r : hidden_readers) reorder(r->weight, 1, perm);
}

void permute_ffn(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& perm) {
  nn::Linear &in = layer_linear(model, layer, LayerLinear::intermediate),
             &out = layer_linear(model, layer, LayerLinear::output);
  check_perm(perm, in.weight.data().size(0), "permute_ffn");
  reorder(in.weight, 0, perm);
  if (in.bias.defined()) reorder(in.bias, 0, perm);
  reorder(out.weight, 1, perm);
}

void permute_attention_values(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& perm) {
  nn::Linear &v = layer_linear(model, layer, LayerLinear::value),
             &out = layer_linear(model, layer, LayerLinear::attention_output);
  const int64_t d = model.config.head_dim();
  check_perm(perm, v.weight.data().size(0), "permute_attention_values");
  for (size_t k = 0; k < perm.size(); ++k)
    LOPPER_CHECK(perm[k] / d == static_cast<int64_t>(k) / d, "[permute_attention_values] channel ", perm[k],
                 " would leave its head for position ", k);
  reorder(v.weight, 0, perm);
  if (v.bias.defined()) reorder(v.bias, 0, perm);
  reorder(out.weight, 1, perm);
}

nlohmann::json pattern_json(const NmPattern& p) {
  json j = {{"pattern", p.kind == NmKind::one_d ? "1d" : p.kind == NmKind::two_d ? "2d" : "unstructured"},
            {"unit", {p.unit_rows, p.unit_cols}}};
  if (p.kind == NmKind::unstructured) {
    j["density"] = p.density;
  } else {
    j["n"] = p.n;
    j["m"] = p.m;
  }
  if (p.kind == NmKind::two_d) j["select"] = p.greedy ? "greedy" : "best";
  return j;
}

NmPattern pattern_from_json(const nlohmann::json& j) {
  NmPattern p;
  try {
    const std::string k = j.at("pattern");
    p.kind = k == "1d" ? NmKind::one_d : k == "2d" ? NmKind::two_d : NmKind::unstructured;
    LOPPER_CHECK(k == "1d" || k == "2d" || k == "unstructured", "unknown pattern '", k, "'");
    p.unit_rows = j.at("unit").at(0);
    p.unit_cols = j.at("unit").at(1);
    if (p.kind == NmKind::unstructured) {
      p.density = j.at("density");
    } else {
      p.n = j.at("n");
      p.m = j.at("m");
    }
    p.greedy = j.value("select", "best") == "greedy";
  } catch (const json::exception& e) {
    LOPPER_FAIL("[sparsity] ", j.dump(), " is not a pattern (", e.what(), ")");
  }
  check_pattern(p);
  return p;
}

void mask_gradients(const std::vector<std::pair<Variable, Tensor>>& held) {
  for (const auto& [p, mask] : held)
    if (p.grad().defined()) p.set_grad(mul(p.grad(), mask));
}

NmPruneResult nm_prune(nn::BertModel& model, const std::vector<nn::Linear*>& hidden_readers, const NmPruneOptions& o) {
  const nn::BertConfig& c = model.config;
  const NmPattern& p = o.pattern;
  const std::vector<EncoderLinear> sel = select_linears(c, o);
  auto weight = [&](const EncoderLinear& x) -> Variable& { return layer_linear(model, x.layer, x.which).weight; };
  NmPruneResult r;
  json perms = json::array();
  std::map<std::string, double> unpermuted;  // share of |W| the pattern keeps without permutation
  if (o.permute) {
    for (const EncoderLinear& x : sel) unpermuted[x.name] = kept_magnitude(weight(x).data(), nm_mask(weight(x).data(), p));
    const int64_t ur = p.unit_rows, uc = p.unit_cols;
    auto record = [&](const std::string& what, const PermutationResult& s) {
      perms.push_back({{"channels", what}, {"swaps", s.swaps}, {"kept_before", s.kept_before}, {"kept_after", s.kept_after}});
    };
    // The residual stream: one permutation for every selected Linear that reads it.
    std::vector<float> stacked;
    int64_t rows = 0;
    for (const EncoderLinear& x : sel)
      if (x.which != LayerLinear::attention_output && x.which != LayerLinear::output) {
        std::vector<float> u = unit_scores(weight(x).data(), ur, uc);
        stacked.insert(stacked.end(), u.begin(), u.end());
        rows += x.shape[0] / ur;
      }
    if (rows > 0) {
      const int64_t C = c.hidden_size / uc;
      PermutationResult s = search_permutation(stacked, rows, C, p.n, p.m, C);
      permute_hidden(model, hidden_readers, channels(s.perm, uc));
      record("hidden", s);
    }
    for (const EncoderLinear& x : sel) {
      const Tensor& w = weight(x).data();
      if (x.which == LayerLinear::output) {  // the FFN's neurons, freely
        const int64_t C = x.shape[1] / uc;
        PermutationResult s = search_permutation(unit_scores(w, ur, uc), x.shape[0] / ur, C, p.n, p.m, C);
        permute_ffn(model, x.layer, channels(s.perm, uc));
        record("encoder.layer." + std::to_string(x.layer) + ".ffn", s);
      } else if (x.which == LayerLinear::attention_output) {  // value channels, inside their head
        const int64_t d = c.head_dim();
        if (d % uc != 0 || (d / uc) % p.m != 0) {
          perms.push_back({{"channels", "encoder.layer." + std::to_string(x.layer) + ".attention"},
                           {"skipped", "groups of " + std::to_string(p.m * uc) + " channels cross heads of " +
                                           std::to_string(d)}});
          continue;
        }
        PermutationResult s = search_permutation(unit_scores(w, ur, uc), x.shape[0] / ur, x.shape[1] / uc, p.n, p.m, d / uc);
        permute_attention_values(model, x.layer, channels(s.perm, uc));
        record("encoder.layer." + std::to_string(x.layer) + ".attention", s);
      }
    }
  }
  json linears = json::array();
  double kept_abs = 0, total_abs = 0, kept_unpermuted = 0, zeros = 0, count = 0;
  for (const EncoderLinear& x : sel) {
    Variable& w = weight(x);
    Tensor mask = nm_mask(w.data(), p);
    Tensor a = abs(w.data().to(DType::f32));
    const double total = sum_all(a).item<double>(), kept = sum_all(mul(a, mask)).item<double>();
    w.mutable_data() = mul(w.data(), mask.to(w.data().dtype())).contiguous();
    r.masks[x.name + ".weight"] = mask;
    json j = {{"name", x.name}, {"kept_magnitude", total > 0 ? kept / total : 1.0},
              {"density", sum_all(mask).item<double>() / static_cast<double>(mask.numel())}};
    if (o.permute) {
      j["kept_magnitude_unpermuted"] = unpermuted[x.name];
      kept_unpermuted += unpermuted[x.name] * total;  // a permutation keeps sum |W|
    }
    linears.push_back(j);
    kept_abs += kept;
    total_abs += total;
    count += static_cast<double>(mask.numel());
    zeros += static_cast<double>(mask.numel()) - sum_all(mask).item<double>();
  }
  r.report = {{"pattern", p.str()},
              {"linears_pruned", static_cast<int64_t>(sel.size())},
              {"sparsity", count > 0 ? zeros / count : 0.0},
              {"kept_magnitude", total_abs > 0 ? kept_abs / total_abs : 1.0},
              {"linears", linears}};
  if (o.permute) {
    r.report["kept_magnitude_unpermuted"] = total_abs > 0 ? kept_unpermuted / total_abs : 1.0;
    r.report["permutations"] = perms;
  }
  return r;
}

}  // namespace lopper::pruning
