// Switching a model's sparse Linears to the block-sparse matmul, and back.
#include "nn/block_sparse.h"

#include <map>
#include <sstream>

#include "nn/layers.h"

namespace lopper::nn {

const std::vector<std::string>& BlockSparseOptions::panels_names() {
  static const std::vector<std::string> names = {"auto", "always", "never"};
  return names;
}

BlockSparseOptions::Panels BlockSparseOptions::panels_from_name(const std::string& name) {
  if (name == "auto") return Panels::where_preferred;
  if (name == "always") return Panels::always;
  LOPPER_CHECK(name == "never", "[block_sparse] dense_panels '", name, "' is not auto, always or never");
  return Panels::never;
}

BlockSparseScope::BlockSparseScope(Module& model, const BlockSparseOptions& options) {
  LOPPER_CHECK(options.max_density >= 0.0 && options.max_density <= 1.0, "[block_sparse] max_density ",
               options.max_density, " is outside [0, 1]");
  LOPPER_CHECK(options.dense_max_rows >= 0, "[block_sparse] dense_max_rows ", options.dense_max_rows, " is negative");
  dense_max_rows_ = options.dense_max_rows;
  using Panels = BlockSparseOptions::Panels;
  const bool panels = options.dense_panels == Panels::always
                          ? panel_linear_built()
                          : options.dense_panels == Panels::where_preferred && panel_linear_preferred();
  // Blocks matter for sparse weights, and for dense ones packed for short inputs; without
  // either, no weight is scanned for them.
  const bool want_blocks = options.max_density > 0.0 || (options.dense_max_rows > 0 && !panels);
  for (auto& [name, lin] : model.named_modules_of_type<Linear>()) {
    ++linears_;
    const Tensor& w = lin->weight.data();
    if (!w.device().is_cpu() || w.dtype() != DType::f32) continue;
    // The shape that skips the most: the lowest density (ties to the earlier listed one);
    // none when no listed block divides the weight.
    BlockSparseLayer best{name, 0, 0, 2.0};
    if (want_blocks)
      for (auto [br, bc] : options.blocks) {
        LOPPER_CHECK(br > 0 && bc > 0, "[block_sparse] block (", br, ", ", bc, ") must be positive");
        if (w.size(0) % br != 0 || w.size(1) % bc != 0) continue;
        double d = block_density(w, br, bc);
        if (d < best.density) best = {name, br, bc, d};
      }
    const bool divides = best.density <= 1.0;
    if (!divides) best.density = 1.0;  // all of it kept, as far as anyone can tell
    best.dense = !divides || best.density > options.max_density || options.max_density == 0.0;
    best.panels = best.dense && panels;
    const bool short_packed = best.dense && !best.panels && divides && options.dense_max_rows > 0;
    if (best.dense && !short_packed && !best.panels) continue;
    if (!best.dense || short_packed) {
      lin->block_sparse = std::make_shared<const BlockSparseMatrix>(to_block_sparse(w, best.block_rows, best.block_cols));
      if (best.dense) lin->block_sparse_max_rows = options.dense_max_rows;
    }
    if (best.panels) lin->panels = std::make_shared<const PanelMatrix>(to_panels(w));
    layers_.push_back(best);
    switched_.push_back(lin);
  }
}

BlockSparseScope::~BlockSparseScope() {
  for (Linear* lin : switched_) {
    lin->block_sparse.reset();
    lin->block_sparse_max_rows = INT64_MAX;
    lin->panels.reset();
  }
}

int64_t BlockSparseScope::sparse_count() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l.dense ? 0 : 1;
  return n;
}

std::string BlockSparseScope::describe() const {
  if (layers_.empty()) return "";
  std::map<std::string, int> shapes;
  double sum = 0;
  int64_t sparse = sparse_count(), dense = static_cast<int64_t>(layers_.size()) - sparse;
  for (const auto& l : layers_) {
    if (l.dense) continue;
    ++shapes[std::to_string(l.block_rows) + "x" + std::to_string(l.block_cols)];
    sum += l.density;
  }
  std::ostringstream os;
  if (sparse > 0) {
    os << sparse << " of " << linears_ << " Linears block-sparse (";
    bool first = true;
    for (auto& [s, n] : shapes) {
      os << (first ? "" : ", ") << s << (shapes.size() > 1 ? ": " + std::to_string(n) : "");
      first = false;
    }
    os.precision(3);
    os << "), mean block density " << sum / static_cast<double>(sparse);
  }
  int64_t panels = 0;
  for (const auto& l : layers_) panels += l.panels;
  if (dense > 0) {
    os << (sparse > 0 ? "; " : "") << dense << (sparse > 0 ? " dense ones" : " of " + std::to_string(linears_) + " Linears");
    if (panels > 0) os << " packed in panels" << (panels < dense ? " (" + std::to_string(panels) + ")" : "");
    if (panels < dense)
      os << (panels > 0 ? "," : "") << " packed for inputs of at most " << dense_max_rows_ << " rows"
         << (panels > 0 ? " (" + std::to_string(dense - panels) + ")" : "");
  }
  return os.str();
}

}  // namespace lopper::nn
