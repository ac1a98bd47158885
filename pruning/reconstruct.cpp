// Normal equations per sub-layer, their damped solves, and the teacher/student walk.
#include "pruning/reconstruct.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "autograd/functions.h"
#include "core/ops.h"

namespace lopper::pruning {

namespace {
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXd;

Mat to_mat(const Tensor& t) {  // (r, c) float tensor -> double matrix
  std::vector<float> v = t.to(Device::cpu()).contiguous().to_vector<float>();
  Mat m(t.size(0), t.size(1));
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i) m.data()[i] = v[static_cast<size_t>(i)];
  return m;
}

Eigen::Map<const Mat> view(const std::vector<double>& v, int64_t r, int64_t c) { return {v.data(), r, c}; }

double ridge(const Mat& a, double damp) {
  double mean = a.rows() ? a.diagonal().mean() : 0.0;
  return damp * (mean > 0 ? mean : 1.0);
}

// Solves (a + lambda I) x = rhs with LDLT; false if the result is not finite.
bool solve(Mat a, double lambda, const Mat& rhs, Mat& x) {
  a.diagonal().array() += lambda;
  Eigen::LDLT<Mat> ldlt(a);
  if (ldlt.info() != Eigen::Success) return false;
  x = ldlt.solve(rhs);
  return x.allFinite();
}
}  // namespace

void NormalEquations::add(const Tensor& x, const Tensor& y) {
  LOPPER_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0), "[reconstruct] X ", shape_str(x.shape()), " and Y ", shape_str(y.shape()),
               " must be (N, w) and (N, c)");
  if (xtx.empty()) {
    w = x.size(1);
    c = y.size(1);
    xtx.assign(static_cast<size_t>((w + 1) * (w + 1)), 0.0);
    xty.assign(static_cast<size_t>((w + 1) * c), 0.0);
  }
  LOPPER_CHECK(x.size(1) == w && y.size(1) == c, "[reconstruct] X ", shape_str(x.shape()), " and Y ", shape_str(y.shape()), " after (N, ", w,
               ") and (N, ", c, ")");
  Tensor ones = Tensor::ones({x.size(0), 1}, x.dtype(), x.device());
  Tensor xa = w == 0 ? ones : concat({x.contiguous(), ones}, 1);  // (N, w + 1)
  std::vector<float> a = matmul(xa, xa, true, false).to_vector<float>();
  std::vector<float> b = matmul(xa, y.contiguous(), true, false).to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) xtx[i] += a[i];
  for (size_t i = 0; i < b.size(); ++i) xty[i] += b[i];
  yty += sum_all(square(y)).to(DType::f64).item<double>();
  rows += x.size(0);
}

double projection_error(const NormalEquations& e, const std::vector<double>& v) {
  LOPPER_CHECK(static_cast<int64_t>(v.size()) == e.c * (e.w + 1), "[reconstruct] a projection of ", v.size(),
               " values for (", e.c, ", ", e.w + 1, ")");
  auto V = view(v, e.c, e.w + 1);
  auto A = view(e.xtx, e.w + 1, e.w + 1);
  auto B = view(e.xty, e.w + 1, e.c);
  // A sum of squares: where the fit is exact, rounding in the expansion may dip below 0.
  return std::max(0.0, ((V * A).array() * V.array()).sum() - 2 * (V.array() * B.transpose().array()).sum() + e.yty);
}

std::vector<double> masked_projection(const nn::Linear& lin, const std::vector<double>& s, int64_t group) {
  Mat w = to_mat(lin.weight.data());  // (c, in)
  LOPPER_CHECK(static_cast<int64_t>(s.size()) * group == w.cols(), "[reconstruct] ", s.size(), " mask values of ", group,
               " inputs for a weight with ", w.cols(), " columns");
  std::vector<float> b = lin.bias.data().to(Device::cpu()).to_vector<float>();
  Mat v(w.rows(), w.cols() + 1);
  for (int64_t j = 0; j < w.cols(); ++j) v.col(j) = w.col(j) * s[static_cast<size_t>(j / group)];
  for (int64_t i = 0; i < w.rows(); ++i) v(i, w.cols()) = b[static_cast<size_t>(i)];
  return {v.data(), v.data() + v.size()};
}

std::vector<double> solve_scales(const NormalEquations& e, const nn::Linear& lin, int64_t group,
                                 const std::vector<bool>& keep, double damp) {
  LOPPER_CHECK(static_cast<int64_t>(keep.size()) * group == e.w, "[reconstruct] ", keep.size(), " groups of ", group,
               " for equations of width ", e.w);
  std::vector<int64_t> cols, groups;  // the kept inputs, and which kept group each is in
  for (size_t i = 0, g = 0; i < keep.size(); ++i) {
    if (!keep[i]) continue;
    for (int64_t d = 0; d < group; ++d) {
      cols.push_back(static_cast<int64_t>(i) * group + d);
      groups.push_back(static_cast<int64_t>(g));
    }
    ++g;
  }
  std::vector<double> scales(keep.size(), 0.0);
  const auto k = static_cast<int64_t>(cols.size() / static_cast<size_t>(group));
  if (k == 0) return scales;
  Mat w = to_mat(lin.weight.data());  // (c, w)
  std::vector<float> bias = lin.bias.data().to(Device::cpu()).to_vector<float>();
  auto A = view(e.xtx, e.w + 1, e.w + 1);
  auto B = view(e.xty, e.w + 1, e.c);
  const auto n = static_cast<int64_t>(cols.size());
  Mat wk(e.c, n), ak(n, n), q(n, e.c);
  for (int64_t j = 0; j < n; ++j) {
    wk.col(j) = w.col(cols[j]);
    for (int64_t i = 0; i < n; ++i) ak(i, j) = A(cols[i], cols[j]);
    for (int64_t c = 0; c < e.c; ++c) q(j, c) = B(cols[j], c) - A(cols[j], e.w) * bias[static_cast<size_t>(c)];
  }
  // Column d of the kept projection times x_d is one group's share: sum over tokens of the
  // products of shares is (W^T W) .* (X^T X), and of shares with the target diag(W^T Q^T).
  Mat p = (wk.transpose() * wk).array() * ak.array();
  Vec r = (wk.transpose().array() * q.array()).rowwise().sum();
  Mat a = Mat::Zero(k, k);
  Mat b = Mat::Zero(k, 1);
  for (int64_t i = 0; i < n; ++i) {
    b(groups[i], 0) += r(i);
    for (int64_t j = 0; j < n; ++j) a(groups[i], groups[j]) += p(i, j);
  }
  Mat x;
  if (!solve(a, ridge(a, damp), b - a * Mat::Ones(k, 1), x)) return {};
  for (size_t i = 0, g = 0; i < keep.size(); ++i)
    if (keep[i]) scales[i] = 1.0 + x(static_cast<int64_t>(g++), 0);
  return scales;
}

bool tune_projection(const NormalEquations& e, nn::Linear& lin, double damp) {
  LOPPER_CHECK(lin.weight.size(1) == e.w && lin.weight.size(0) == e.c, "[reconstruct] a projection ",
               shape_str(lin.weight.data().shape()), " for equations of width ", e.w, " and ", e.c, " outputs");
  std::vector<double> v0 = masked_projection(lin, std::vector<double>(static_cast<size_t>(e.w), 1.0), 1);
  Mat a = view(e.xtx, e.w + 1, e.w + 1);
  double lambda = ridge(a, damp);
  Mat x;
  if (!solve(a, lambda, view(e.xty, e.w + 1, e.c) + lambda * view(v0, e.c, e.w + 1).transpose(), x)) return false;
  std::vector<float> w(static_cast<size_t>(e.c * e.w)), b(static_cast<size_t>(e.c));
  for (int64_t o = 0; o < e.c; ++o) {
    for (int64_t i = 0; i < e.w; ++i) w[static_cast<size_t>(o * e.w + i)] = static_cast<float>(x(i, o));
    b[static_cast<size_t>(o)] = static_cast<float>(x(e.w, o));
  }
  Device d = lin.weight.data().device();
  lin.weight.mutable_data() = Tensor::from_vector(w, {e.c, e.w}, d).to(lin.weight.dtype());
  lin.bias.mutable_data() = Tensor::from_vector(b, {e.c}, d).to(lin.bias.dtype());
  return true;
}

LayerWalk::LayerWalk(const nn::BertModel& teacher, const nn::BertModel& student, std::vector<ExampleBatch> batches)
    : teacher_(teacher), student_(student), batches_(std::move(batches)) {
  LOPPER_CHECK(teacher.config.num_hidden_layers == student.config.num_hidden_layers, "[reconstruct] a teacher of ",
               teacher.config.num_hidden_layers, " layers for a student of ", student.config.num_hidden_layers);
  NoGradGuard ng;
  for (const ExampleBatch& b : batches_) {
    DType dt = teacher.embeddings->word_embeddings->weight.dtype();
    additive_.push_back(nn::additive_attention_mask(b.attention_mask, dt));
    teacher_h_.push_back(teacher.embeddings->forward(b.ids, b.token_types, {}).data());
    student_h_.push_back(student.embeddings->forward(b.ids, b.token_types, {}).data());
    // Rows of the flattened (B * T) tokens that are real; of those, each example's first.
    const int64_t n = b.attention_mask.size(0), t = b.attention_mask.size(1);
    std::vector<int64_t> mask = b.attention_mask.to(Device::cpu()).to(DType::i64).to_vector<int64_t>(), real, cls;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < t; ++j) {
        if (mask[static_cast<size_t>(i * t + j)] == 0) continue;
        real.push_back(i * t + j);
        if (j == 0) cls.push_back(i * t);
      }
    Device d = b.attention_mask.device();
    real_rows_.push_back(Tensor::from_vector(real, {static_cast<int64_t>(real.size())}, d));
    cls_rows_.push_back(Tensor::from_vector(cls, {static_cast<int64_t>(cls.size())}, d));
  }
}

Tensor LayerWalk::rows(const Tensor& h, size_t b, bool cls_only) const {
  Tensor flat = h.contiguous().reshape({h.size(0) * h.size(1), h.size(2)});
  return index_select(flat, 0, cls_only ? cls_rows_[b] : real_rows_[b]);
}

NormalEquations LayerWalk::attention(bool cls_only) {
  LOPPER_CHECK(layer_ < teacher_.config.num_hidden_layers, "[reconstruct] past the last layer");
  NoGradGuard ng;
  const nn::BertAttention& t = *(*teacher_.encoder->layer)[static_cast<size_t>(layer_)].attention;
  const nn::BertAttention& s = *(*student_.encoder->layer)[static_cast<size_t>(layer_)].attention;
  NormalEquations e;
  for (size_t b = 0; b < batches_.size(); ++b) {
    Tensor pre = ag::add(t.output->dense->forward(t.self->forward(Variable(teacher_h_[b]), additive_[b], {})),
                         Variable(teacher_h_[b])).data();  // (B, T, C) before LayerNorm
    Tensor ctx = s.self->forward(Variable(student_h_[b]), additive_[b], {}).data();  // (B, T, heads * D)
    e.add(rows(ctx, b, cls_only), rows(sub(pre, student_h_[b]), b, cls_only));
    teacher_h_[b] = t.output->layer_norm->forward(Variable(pre)).data();
  }
  return e;
}

void LayerWalk::attention_done() {
  NoGradGuard ng;
  const nn::BertAttention& s = *(*student_.encoder->layer)[static_cast<size_t>(layer_)].attention;
  for (size_t b = 0; b < batches_.size(); ++b) student_h_[b] = s.forward(Variable(student_h_[b]), additive_[b], {}).data();
}

NormalEquations LayerWalk::ffn(bool cls_only) {
  NoGradGuard ng;
  const nn::BertLayer& t = (*teacher_.encoder->layer)[static_cast<size_t>(layer_)];
  const nn::BertLayer& s = (*student_.encoder->layer)[static_cast<size_t>(layer_)];
  NormalEquations e;
  for (size_t b = 0; b < batches_.size(); ++b) {
    Variable a(teacher_h_[b]);
    Tensor pre = ag::add(t.output->dense->forward(t.intermediate->forward(a)), a).data();  // (B, T, C)
    Tensor h = s.intermediate->forward(Variable(student_h_[b])).data();                   // (B, T, F)
    e.add(rows(h, b, cls_only), rows(sub(pre, student_h_[b]), b, cls_only));
    teacher_h_[b] = t.output->layer_norm->forward(Variable(pre)).data();
  }
  return e;
}

void LayerWalk::ffn_done() {
  NoGradGuard ng;
  const nn::BertLayer& s = (*student_.encoder->layer)[static_cast<size_t>(layer_)];
  for (size_t b = 0; b < batches_.size(); ++b) {
    Variable a(student_h_[b]);
    student_h_[b] = s.output->forward(s.intermediate->forward(a), a, {}).data();
  }
  ++layer_;
}

}  // namespace lopper::pruning
