// Knowledge distillation for the training stages: a teacher run without gradients, and the
// student's loss as (1 - alpha) task + alpha T^2 KL(teacher_T || student_T) on the logits
// (MSE on them for regression) + hidden_weight x the mean over mapped layers of the
// hidden-state MSE. Not the teacher's origin: the runner decides which model teaches.
#pragma once
#include <memory>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "nn/bert.h"
#include "trainers/experiment.h"

namespace lopper::trainers {

class Distiller {
 public:
  // Checks that teacher and student agree on labels and hidden width (where hidden states
  // are distilled) and resolves the layer map.
  Distiller(std::unique_ptr<nn::BertForSequenceClassification> teacher, const TeacherSpec& spec,
            const nn::BertConfig& student);

  struct Parts {
    Variable total;       // ()
    double task = 0, logits = 0, hidden = 0;  // the three terms before weighting
  };
  // student_hidden: the student's hidden states (needed only when hidden_weight > 0).
  Parts loss(const Variable& task_loss, const Variable& student_logits, const std::vector<Variable>& student_hidden,
             const data::Batch& b, bool regression) const;

  // The checks above on configs alone, so a run can make them before its first step;
  // returns the layer map (the spec's, or each student layer to its proportional teacher layer).
  static std::vector<std::pair<int64_t, int64_t>> check(const TeacherSpec& spec, const nn::BertConfig& teacher,
                                                         const nn::BertConfig& student);

  bool wants_hidden() const { return spec_.hidden_weight > 0; }
  const std::vector<std::pair<int64_t, int64_t>>& layer_map() const { return map_; }

 private:
  std::unique_ptr<nn::BertForSequenceClassification> teacher_;
  TeacherSpec spec_;
  std::vector<std::pair<int64_t, int64_t>> map_;
};

}  // namespace lopper::trainers
