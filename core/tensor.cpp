// Tensor views and copies. Every view op checks its arguments and names the op.
#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "core/backend.h"
#include "core/profile.h"
#include "core/kernels/indexer.h"

namespace lopper {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    LOPPER_CHECK(da == db || da == 1 || db == 1, "[", op, "] shapes ", shape_str(a), " and ",
                 shape_str(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---- construction ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LOPPER_CHECK(d >= 0, "[tensor] negative size in shape ", shape_str(shape));
  LOPPER_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims), "[tensor] at most ",
               kernels::kMaxDims, " dims, got ", shape_str(shape));
  auto storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  return Tensor(std::move(storage), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  Tensor t = empty({n}, dtype, Device::cpu());
  dispatch_all(dtype, "arange", [&](auto tag_) { using scalar_t = typename decltype(tag_)::type;
    auto* p = t.data<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<scalar_t>(static_cast<float>(i));
  });
  return t.to(device);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, int64_t offset) {
  LOPPER_CHECK(storage != nullptr, "[from_storage] null storage");
  size_t need = (static_cast<size_t>(offset) + static_cast<size_t>(shape_numel(shape))) * dtype_size(dtype);
  LOPPER_CHECK(need <= storage->bytes(), "[from_storage] ", shape_str(shape), " ", dtype_name(dtype), " at offset ",
               offset, " needs ", need, " bytes, storage has ", storage->bytes());
  return Tensor(std::move(storage), shape, contiguous_strides(shape), offset, dtype);
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  LOPPER_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "[from_vector] ",
               values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape, DTypeOf<T>::value, Device::cpu());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t.to(device);
}

template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<BFloat16>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&, Device);

// ---- properties ----

int64_t Tensor::normalize_dim(int64_t d) const {
  int64_t n = dim();
  int64_t r = d < 0 ? d + n : d;
  LOPPER_CHECK(r >= 0 && r < n, "[tensor] dim ", d, " out of range for shape ", shape_str(shape_));
  return r;
}

int64_t Tensor::size(int64_t d) const { return shape_[normalize_dim(d)]; }
int64_t Tensor::stride(int64_t d) const { return strides_[normalize_dim(d)]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to be out of place
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  LOPPER_CHECK(defined(), "[tensor] data of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(itemsize());
}

// ---- views ----

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      LOPPER_CHECK(infer < 0, "[view] more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    LOPPER_CHECK(known > 0 && numel() % known == 0, "[view] cannot view ", shape_str(shape_), " as ",
                 shape_str(shape));
    s[infer] = numel() / known;
  }
  LOPPER_CHECK(shape_numel(s) == numel(), "[view] cannot view ", shape_str(shape_), " (", numel(),
               " elements) as ", shape_str(shape));
  LOPPER_CHECK(is_contiguous(), "[view] needs a contiguous tensor, got shape ", shape_str(shape_),
               " strides ", shape_str(strides_), "; use reshape()");
  return with_layout(s, contiguous_strides(s), offset_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = normalize_dim(d0);
  d1 = normalize_dim(d1);
  Shape s = shape_, st = strides_;
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  return with_layout(s, st, offset_);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  LOPPER_CHECK(static_cast<int64_t>(dims.size()) == dim(), "[permute] ", dims.size(),
               " dims for a tensor of shape ", shape_str(shape_));
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = normalize_dim(dims[i]);
    LOPPER_CHECK(!seen[d], "[permute] dim ", d, " repeated");
    seen[d] = true;
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  return with_layout(s, st, offset_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = normalize_dim(d);
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  LOPPER_CHECK(step > 0 && start >= 0 && start <= end, "[slice] bad range [", start, ", ", end,
               ") step ", step, " on dim ", d, " of size ", n);
  Shape s = shape_, st = strides_;
  s[d] = (end - start + step - 1) / step;
  st[d] = strides_[d] * step;
  return with_layout(s, st, offset_ + start * strides_[d]);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = normalize_dim(d);
  if (index < 0) index += shape_[d];
  LOPPER_CHECK(index >= 0 && index < shape_[d], "[select] index ", index, " out of range for dim ",
               d, " of shape ", shape_str(shape_));
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return with_layout(s, st, offset_ + index * strides_[d]);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  if (d < 0) d += dim() + 1;
  LOPPER_CHECK(d >= 0 && d <= dim(), "[unsqueeze] dim ", d, " for shape ", shape_str(shape_));
  Shape s = shape_, st = strides_;
  int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return with_layout(s, st, offset_);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = normalize_dim(d);
  LOPPER_CHECK(shape_[d] == 1, "[squeeze] dim ", d, " has size ", shape_[d], ", not 1");
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return with_layout(s, st, offset_);
}

Tensor Tensor::expand(const Shape& shape) const {
  LOPPER_CHECK(shape.size() >= shape_.size(), "[expand] cannot expand ", shape_str(shape_), " to ",
               shape_str(shape));
  size_t lead = shape.size() - shape_.size();
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    int64_t have = shape_[i], want = shape[lead + i];
    LOPPER_CHECK(have == want || have == 1, "[expand] cannot expand ", shape_str(shape_), " to ",
                 shape_str(shape));
    st[lead + i] = have == want ? strides_[i] : 0;
  }
  return with_layout(shape, st, offset_);
}

// ---- copies ----

void Tensor::copy_(const Tensor& src) {
  LOPPER_CHECK(defined() && src.defined(), "[copy_] undefined tensor");
  Tensor s = src.shape_ == shape_ ? src : src.expand(shape_);
  if (s.device() == device()) {
    ProfileScope profile("copy", device());
    if (device().is_cuda()) cuda::copy(s, *this); else cpu::copy(s, *this);
    return;
  }
  // Across devices: stage through a contiguous tensor of the destination's dtype.
  Tensor c = s.dtype() == dtype_ && s.is_contiguous() ? s : s.to(dtype_).contiguous();
  ProfileScope profile("copy_between_devices", device().is_cuda() ? device() : src.device(),
                       src.device().is_cpu() ? "to_device" : device().is_cpu() ? "to_host" : "peer");
  if (is_contiguous()) {
    cuda::copy_between_devices(c, *this);
  } else {
    Tensor tmp = empty(shape_, dtype_, device());
    cuda::copy_between_devices(c, tmp);
    copy_(tmp);
  }
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  ProfileScope profile("fill", device());
  if (device().is_cuda()) cuda::fill(*this, value); else cpu::fill(*this, value);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor t = empty(shape_, dtype_, d);
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype_) return *this;
  Tensor out = empty(shape_, t, device());
  out.copy_(*this);
  return out;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor h = to(Device::cpu()).to(DTypeOf<T>::value).contiguous();
  std::vector<T> v(static_cast<size_t>(numel()));
  if (!v.empty()) std::memcpy(v.data(), h.raw_data(), v.size() * sizeof(T));
  return v;
}

template <class T>
T Tensor::item() const {
  LOPPER_CHECK(numel() == 1, "[item] tensor of shape ", shape_str(shape_), " has ", numel(),
               " elements, not 1");
  return to_vector<T>()[0];
}

#define LOPPER_INSTANTIATE(T) \
  template std::vector<T> Tensor::to_vector<T>() const; \
  template T Tensor::item<T>() const;
LOPPER_INSTANTIATE(float)
LOPPER_INSTANTIATE(double)
LOPPER_INSTANTIATE(int32_t)
LOPPER_INSTANTIATE(int64_t)
LOPPER_INSTANTIATE(uint8_t)
#undef LOPPER_INSTANTIATE

std::string Tensor::str(int64_t max_elems) const {
  std::ostringstream os;
  os << "Tensor" << shape_str(shape_) << " " << dtype_name(dtype_) << " " << device().str();
  if (!defined()) return "Tensor(undefined)";
  auto v = to_vector<double>();
  os << " [";
  for (int64_t i = 0; i < std::min<int64_t>(max_elems, static_cast<int64_t>(v.size())); ++i)
    os << (i ? ", " : "") << v[i];
  if (static_cast<int64_t>(v.size()) > max_elems) os << ", ...";
  os << "]";
  return os.str();
}

}  // namespace lopper
