// N:M masks, their checks and the channel-permutation search, on the CPU over plain arrays.
#include "pruning/nm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/ops.h"
#include "pruning/movement.h"

namespace lopper::pruning {

double NmPattern::share_kept() const {
  return kind == NmKind::unstructured ? density : static_cast<double>(n) / static_cast<double>(m);
}

std::string NmPattern::str() const {
  char b[96];
  if (kind == NmKind::unstructured)
    std::snprintf(b, sizeof b, "density %.3g", density);
  else
    std::snprintf(b, sizeof b, "%lld:%lld%s", static_cast<long long>(n), static_cast<long long>(m),
                  kind == NmKind::two_d ? (greedy ? " 2d greedy" : " 2d") : "");
  std::string s = b;
  if (unit_rows != 1 || unit_cols != 1) s += " of " + std::to_string(unit_rows) + "x" + std::to_string(unit_cols) + " units";
  return s;
}

void check_pattern(const NmPattern& p) {
  LOPPER_CHECK(p.unit_rows > 0 && p.unit_cols > 0, "vector/block: unit ", p.unit_rows, "x", p.unit_cols,
               " must be positive");
  if (p.kind == NmKind::unstructured) {
    LOPPER_CHECK(p.density > 0 && p.density <= 1, "density: ", p.density, " is outside (0, 1]");
    return;
  }
  LOPPER_CHECK(p.m >= 2 && p.m <= 32, "m: ", p.m, " is outside 2..32 (groups of at most 32 units)");
  LOPPER_CHECK(p.n >= 1 && p.n < p.m, "n: ", p.n, " must be at least 1 and below m = ", p.m);
  LOPPER_CHECK(p.kind != NmKind::two_d || (p.unit_rows == 1 && p.unit_cols == 1),
               "pattern: 2d N:M works on single weights, not on ", p.unit_rows, "x", p.unit_cols, " units");
}

void check_fits(const NmPattern& p, int64_t rows, int64_t cols, const std::string& what) {
  const int64_t ur = p.unit_rows, uc = p.unit_cols;
  const char* unit_key = uc == 1 ? "vector" : "block";
  LOPPER_CHECK(rows % ur == 0 && cols % uc == 0, unit_key, ": ", ur, "x", uc, " units do not tile ", what, "'s (",
               rows, ", ", cols, ") weight");
  if (p.kind == NmKind::unstructured) return;
  LOPPER_CHECK((cols / uc) % p.m == 0, "m: ", what, "'s ", cols / uc, " unit columns are not a multiple of ", p.m);
  LOPPER_CHECK(p.kind != NmKind::two_d || (rows / ur) % p.m == 0, "m: ", what, "'s ", rows,
               " rows are not a multiple of ", p.m, " (2d N:M needs m x m blocks)");
}

std::vector<float> unit_scores(const Tensor& w, int64_t ur, int64_t uc) {
  LOPPER_CHECK(w.dim() == 2 && w.size(0) % ur == 0 && w.size(1) % uc == 0, "[unit_scores] weight ",
               shape_str(w.shape()), " vs unit ", ur, "x", uc);
  const int64_t rows = w.size(0), cols = w.size(1), R = rows / ur, C = cols / uc;
  std::vector<float> a = w.to(Device::cpu()).to(DType::f32).contiguous().to_vector<float>();
  std::vector<float> u(static_cast<size_t>(R * C), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) u[(r / ur) * C + c / uc] += std::fabs(a[r * cols + c]);
  return u;
}

std::vector<uint8_t> top_n_of_m(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m) {
  LOPPER_CHECK(C % m == 0 && n >= 0 && n <= m && static_cast<int64_t>(u.size()) == R * C, "[top_n_of_m] ", R, "x", C,
               " scores, ", n, ":", m);
  std::vector<uint8_t> keep(u.size(), 0);
  std::vector<int64_t> idx(m);
  for (int64_t g = 0; g < R * C; g += m) {
    std::iota(idx.begin(), idx.end(), g);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                      [&](int64_t a, int64_t b) { return u[a] > u[b] || (u[a] == u[b] && a < b); });
    for (int64_t k = 0; k < n; ++k) keep[idx[k]] = 1;
  }
  return keep;
}

namespace {

// Max-weight choice of at most n per row and per column of an m x m block w (row-major,
// >= 0): a min-cost flow source -> row (capacity n) -> column (1, cost -w) -> sink (n), by
// successive shortest paths (Bellman-Ford queue: the costs are negative), stopping at the
// first path that gains nothing (the flow's cost is convex in its size). Exactly n per row
// and column is not always best: a pattern with fewer may not extend to one with n.
void best_block(const float* w, int64_t m, int64_t n, uint8_t* keep) {
  struct Edge {
    int to;
    int cap;
    double cost;
  };
  const int V = static_cast<int>(2 * m + 2), src = 0, sink = V - 1;
  std::vector<Edge> e;
  std::vector<std::vector<int>> out(V);
  auto add = [&](int a, int b, int cap, double cost) {
    out[a].push_back(static_cast<int>(e.size()));
    e.push_back({b, cap, cost});
    out[b].push_back(static_cast<int>(e.size()));
    e.push_back({a, 0, -cost});
  };
  for (int64_t i = 0; i < m; ++i) add(src, static_cast<int>(1 + i), static_cast<int>(n), 0);
  const size_t first_cell = e.size();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) add(static_cast<int>(1 + i), static_cast<int>(1 + m + j), 1, -w[i * m + j]);
  for (int64_t j = 0; j < m; ++j) add(static_cast<int>(1 + m + j), sink, static_cast<int>(n), 0);
  std::vector<double> dist(V);
  std::vector<int> via(V);
  std::vector<char> queued(V);
  for (int64_t unit = 0; unit < n * m; ++unit) {
    std::fill(dist.begin(), dist.end(), std::numeric_limits<double>::infinity());
    std::fill(via.begin(), via.end(), -1);
    dist[src] = 0;
    std::deque<int> q{src};
    queued.assign(V, 0);
    queued[src] = 1;
    while (!q.empty()) {
      int a = q.front();
      q.pop_front();
      queued[a] = 0;
      for (int id : out[a])
        if (e[id].cap > 0 && dist[a] + e[id].cost < dist[e[id].to] - 1e-12) {
          dist[e[id].to] = dist[a] + e[id].cost;
          via[e[id].to] = id;
          if (!queued[e[id].to]) q.push_back(e[id].to), queued[e[id].to] = 1;
        }
    }
    if (via[sink] < 0 || dist[sink] >= 0) break;
    for (int b = sink; b != src; b = e[via[b] ^ 1].to) {
      e[via[b]].cap -= 1;
      e[via[b] ^ 1].cap += 1;
    }
  }
  for (int64_t c = 0; c < m * m; ++c) keep[c] = e[first_cell + 2 * c].cap == 0;
}

void greedy_block(const float* w, int64_t m, int64_t n, uint8_t* keep) {
  std::vector<int64_t> order(m * m);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return w[a] > w[b]; });
  std::vector<int64_t> rows(m, 0), cols(m, 0);
  for (int64_t c : order) {
    int64_t i = c / m, j = c % m;
    if (rows[i] == n || cols[j] == n) continue;
    keep[c] = 1;
    ++rows[i];
    ++cols[j];
  }
}

template <class F>
std::vector<uint8_t> per_block(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m, F block) {
  LOPPER_CHECK(R % m == 0 && C % m == 0 && n >= 1 && n <= m && static_cast<int64_t>(u.size()) == R * C, "[2d] ", R, "x",
               C, " scores, ", n, ":", m);
  std::vector<uint8_t> keep(u.size(), 0);
  const int64_t blocks = (R / m) * (C / m);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = (b / (C / m)) * m, c0 = (b % (C / m)) * m;
    std::vector<float> w(m * m);
    std::vector<uint8_t> k(m * m, 0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) w[i * m + j] = u[(r0 + i) * C + c0 + j];
    block(w.data(), m, n, k.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) keep[(r0 + i) * C + c0 + j] = k[i * m + j];
  }
  return keep;
}

}  // namespace

std::vector<uint8_t> best_2d(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m) {
  return per_block(u, R, C, n, m, best_block);
}

std::vector<uint8_t> greedy_2d(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m) {
  return per_block(u, R, C, n, m, greedy_block);
}

namespace {
// Units an unstructured pattern keeps of `total`: round(density x total), at least one.
int64_t units_kept(double density, int64_t total) {
  return std::clamp<int64_t>(std::llround(density * static_cast<double>(total)), 1, total);
}
}  // namespace

std::vector<uint8_t> top_share(const std::vector<float>& u, double density) {
  const int64_t total = static_cast<int64_t>(u.size());
  std::vector<float> m = top_v_mask(Tensor::from_vector(u, {total}), units_kept(density, total)).to_vector<float>();
  return std::vector<uint8_t>(m.begin(), m.end());
}

Tensor nm_mask(const Tensor& w, const NmPattern& p) {
  check_pattern(p);
  LOPPER_CHECK(w.dim() == 2, "[nm_mask] weight ", shape_str(w.shape()), " is not a matrix");
  check_fits(p, w.size(0), w.size(1), "[nm_mask]");
  const int64_t rows = w.size(0), cols = w.size(1), ur = p.unit_rows, uc = p.unit_cols, R = rows / ur, C = cols / uc;
  std::vector<float> u = unit_scores(w, ur, uc);
  std::vector<uint8_t> keep = p.kind == NmKind::unstructured ? top_share(u, p.density)
                              : p.kind == NmKind::one_d     ? top_n_of_m(u, R, C, p.n, p.m)
                              : p.greedy                     ? greedy_2d(u, R, C, p.n, p.m)
                                                             : best_2d(u, R, C, p.n, p.m);
  std::vector<float> mask(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) mask[r * cols + c] = keep[(r / ur) * C + c / uc];
  return Tensor::from_vector(mask, {rows, cols}).to(w.device());
}

int64_t nm_violations(const Tensor& w, const NmPattern& p) {
  check_pattern(p);
  check_fits(p, w.size(0), w.size(1), "[nm_violations]");
  const int64_t R = w.size(0) / p.unit_rows, C = w.size(1) / p.unit_cols;
  std::vector<float> u = unit_scores(w, p.unit_rows, p.unit_cols);
  auto nz = [&](int64_t r, int64_t c) { return u[r * C + c] != 0.0f ? int64_t{1} : int64_t{0}; };
  int64_t bad = 0;
  if (p.kind == NmKind::unstructured) {
    int64_t count = 0;
    for (float x : u) count += x != 0.0f;
    return std::max<int64_t>(0, count - units_kept(p.density, R * C));
  }
  if (p.kind == NmKind::one_d) {
    for (int64_t r = 0; r < R; ++r)
      for (int64_t g = 0; g < C; g += p.m) {
        int64_t k = 0;
        for (int64_t j = 0; j < p.m; ++j) k += nz(r, g + j);
        bad += k > p.n;
      }
    return bad;
  }
  for (int64_t r0 = 0; r0 < R; r0 += p.m)
    for (int64_t c0 = 0; c0 < C; c0 += p.m) {
      bool over = false;
      for (int64_t i = 0; i < p.m; ++i) {
        int64_t row = 0, col = 0;
        for (int64_t j = 0; j < p.m; ++j) row += nz(r0 + i, c0 + j), col += nz(r0 + j, c0 + i);
        over = over || row > p.n || col > p.n;
      }
      bad += over;
    }
  return bad;
}

double kept_magnitude(const Tensor& w, const Tensor& mask) {
  LOPPER_CHECK(w.shape() == mask.shape(), "[kept_magnitude] weight ", shape_str(w.shape()), " vs mask ",
               shape_str(mask.shape()));
  Tensor a = abs(w.to(DType::f32));
  double total = sum_all(a).item<double>();
  return total > 0 ? sum_all(mul(a, mask.to(DType::f32).to(w.device()))).item<double>() / total : 1.0;
}

// ---- channel permutation ----

namespace {

// One segment's search. cols[k] (R): the scores of the column at position k.
struct SegmentSearch {
  int64_t R, S, n, m;
  std::vector<std::vector<float>> cols;  // by position
  std::vector<float> top, nth, next;     // (groups, R): sum of the n largest, the n-th, the (n+1)-th
  std::vector<float> delta;              // (S, S): gain of swapping positions i and j

  void group_stats(int64_t g) {
    std::vector<float> v(m);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t j = 0; j < m; ++j) v[j] = cols[g * m + j][r];
      std::partial_sort(v.begin(), v.begin() + n + 1, v.end(), std::greater<float>());
      float s = 0;
      for (int64_t j = 0; j < n; ++j) s += v[j];
      top[g * R + r] = s;
      nth[g * R + r] = v[n - 1];
      next[g * R + r] = v[n];
    }
  }
  double kept() const {
    double s = 0;
    for (float x : top) s += x;
    return s;
  }
  // Change of the kept sum when the column at position `out` of group g leaves and a column
  // with scores `in` takes its place: out was kept (>= the n-th) -> the better of in and the
  // (n+1)-th replaces it; else in replaces the n-th if larger.
  double gain(int64_t g, const float* out, const float* in) const {
    const float *t = &nth[g * R], *x = &next[g * R];
    double total = 0;
    for (int64_t r0 = 0; r0 < R; r0 += 1024) {
      float part = 0;
      const int64_t r1 = std::min(R, r0 + 1024);
#pragma omp simd reduction(+ : part)
      for (int64_t r = r0; r < r1; ++r)
        part += out[r] >= t[r] ? std::max(x[r], in[r]) - out[r] : std::max(t[r], in[r]) - t[r];
      total += part;
    }
    return total;
  }
  double pair_gain(int64_t i, int64_t j) const {
    return gain(i / m, cols[i].data(), cols[j].data()) + gain(j / m, cols[j].data(), cols[i].data());
  }
  // The rows and columns of delta at these positions (row y written by one thread only).
  void refresh(const std::vector<int64_t>& positions) {
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t y = 0; y < S; ++y)
      for (int64_t i : positions)
        delta[y * S + i] = i / m == y / m ? 0.0f : static_cast<float>(pair_gain(y, i));
    for (int64_t i : positions)
      for (int64_t y = 0; y < S; ++y) delta[i * S + y] = delta[y * S + i];
  }
};

}  // namespace

PermutationResult search_permutation(const std::vector<float>& s, int64_t R, int64_t C, int64_t n, int64_t m,
                                     int64_t segment, int64_t max_swaps) {
  LOPPER_CHECK(static_cast<int64_t>(s.size()) == R * C && segment > 0 && C % segment == 0 && segment % m == 0 &&
                   n >= 1 && n < m,
               "[search_permutation] scores ", R, "x", C, ", segment ", segment, ", ", n, ":", m);
  PermutationResult res;
  res.perm.resize(C);
  std::iota(res.perm.begin(), res.perm.end(), int64_t{0});
  for (int64_t s0 = 0; s0 < C; s0 += segment) {
    SegmentSearch q{R, segment, n, m, {}, {}, {}, {}, {}};
    q.cols.assign(segment, std::vector<float>(R));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t k = 0; k < segment; ++k) q.cols[k][r] = s[r * C + s0 + k];
    const int64_t groups = segment / m;
    q.top.resize(groups * R), q.nth.resize(groups * R), q.next.resize(groups * R);
    for (int64_t g = 0; g < groups; ++g) q.group_stats(g);
    const double before = q.kept();
    res.kept_before += before;
    if (groups > 1) {
      q.delta.assign(segment * segment, 0.0f);
      std::vector<int64_t> all(segment);
      std::iota(all.begin(), all.end(), int64_t{0});
      q.refresh(all);
      const double tol = 1e-7 * std::max(before, 1e-30);
      for (; res.swaps < max_swaps; ++res.swaps) {
        auto best = std::max_element(q.delta.begin(), q.delta.end());
        if (*best <= tol) break;
        const int64_t at = best - q.delta.begin(), i = at / segment, j = at % segment;
        std::swap(q.cols[i], q.cols[j]);
        std::swap(res.perm[s0 + i], res.perm[s0 + j]);
        q.group_stats(i / m);
        q.group_stats(j / m);
        std::vector<int64_t> moved;
        for (int64_t k = 0; k < m; ++k) moved.push_back((i / m) * m + k), moved.push_back((j / m) * m + k);
        q.refresh(moved);
      }
    }
    res.kept_after += q.kept();
  }
  return res;
}

}  // namespace lopper::pruning
