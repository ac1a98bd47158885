// Metric definitions (as scikit-learn and scipy compute them).
#include "trainers/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace lopper::trainers {

double accuracy(const std::vector<int64_t>& p, const std::vector<int64_t>& l) {
  LOPPER_CHECK(p.size() == l.size() && !p.empty(), "[metrics] ", p.size(), " predictions for ", l.size(), " labels");
  int64_t c = 0;
  for (size_t i = 0; i < p.size(); ++i) c += p[i] == l[i];
  return static_cast<double>(c) / static_cast<double>(p.size());
}

double f1_binary(const std::vector<int64_t>& p, const std::vector<int64_t>& l) {
  double tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    tp += p[i] == 1 && l[i] == 1;
    fp += p[i] == 1 && l[i] != 1;
    fn += p[i] != 1 && l[i] == 1;
  }
  return tp == 0 ? 0.0 : 2 * tp / (2 * tp + fp + fn);
}

double matthews(const std::vector<int64_t>& p, const std::vector<int64_t>& l) {
  int64_t k = 0;
  for (size_t i = 0; i < p.size(); ++i) k = std::max({k, p[i] + 1, l[i] + 1});
  std::vector<double> pk(k, 0), tk(k, 0);
  double c = 0, s = static_cast<double>(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    pk[p[i]] += 1;
    tk[l[i]] += 1;
    c += p[i] == l[i];
  }
  double pt = 0, pp = 0, tt = 0;
  for (int64_t i = 0; i < k; ++i) {
    pt += pk[i] * tk[i];
    pp += pk[i] * pk[i];
    tt += tk[i] * tk[i];
  }
  double denom = std::sqrt((s * s - pp) * (s * s - tt));
  return denom == 0 ? 0.0 : (c * s - pt) / denom;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  LOPPER_CHECK(x.size() == y.size() && x.size() > 1, "[metrics] pearson needs two equal-length series");
  double mx = std::accumulate(x.begin(), x.end(), 0.0) / x.size(), my = std::accumulate(y.begin(), y.end(), 0.0) / y.size();
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx == 0 || syy == 0 ? 0.0 : sxy / std::sqrt(sxx * syy);
}

namespace {
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  return r;
}
}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) { return pearson(ranks(x), ranks(y)); }

std::map<std::string, double> task_metrics(const std::string& task, const std::vector<double>& pred,
                                           const std::vector<double>& label, bool regression) {
  if (regression) return {{"pearson", pearson(pred, label)}, {"spearman", spearman(pred, label)}};
  std::vector<int64_t> p(pred.begin(), pred.end()), l(label.begin(), label.end());
  std::map<std::string, double> m{{"accuracy", accuracy(p, l)}};
  if (task == "cola") m["mcc"] = matthews(p, l);
  if (task == "mrpc" || task == "qqp") m["f1"] = f1_binary(p, l);
  return m;
}

std::string main_metric(const std::string& task, bool regression) {
  if (regression) return "pearson";
  if (task == "cola") return "mcc";
  if (task == "mrpc" || task == "qqp") return "f1";
  return "accuracy";
}

}  // namespace lopper::trainers
