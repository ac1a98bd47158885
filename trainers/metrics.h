// Task metrics from predictions and labels: accuracy, binary F1, Matthews correlation,
// Pearson and Spearman correlation. Plain functions over vectors; no tensors.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace lopper::trainers {

double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& label);
double f1_binary(const std::vector<int64_t>& pred, const std::vector<int64_t>& label);  // positive class 1
double matthews(const std::vector<int64_t>& pred, const std::vector<int64_t>& label);   // multi-class (Gorodkin)
double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);  // average ranks for ties

// The metrics a GLUE task reports, and the one that picks the best checkpoint.
std::map<std::string, double> task_metrics(const std::string& task, const std::vector<double>& pred,
                                           const std::vector<double>& label, bool regression);
std::string main_metric(const std::string& task, bool regression);

}  // namespace lopper::trainers
