// Tensor: a strided view (shape, strides, offset in elements) over shared Storage.
// View ops (view, transpose, permute, slice, select, expand, ...) never copy; contiguous()
// and clone() do. Not differentiable: autograd::Variable wraps a Tensor for that.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace lopper {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// Numpy broadcasting of two shapes; throws naming `op` and both shapes if incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu());
  // A contiguous view of `shape` over existing storage, starting `offset` elements in.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, int64_t offset = 0);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t itemsize() const { return dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool shares_storage(const Tensor& o) const { return storage_ == o.storage_; }

  void* raw_data() const;  // pointer to the first element of this view
  template <class T>
  T* data() const {
    LOPPER_CHECK(DTypeOf<T>::value == dtype_, "[tensor] data<", dtype_name(DTypeOf<T>::value),
                 ">() on a ", dtype_name(dtype_), " tensor");
    return static_cast<T*>(raw_data());
  }

  // Views (share storage).
  Tensor view(const Shape& shape) const;       // needs a contiguous tensor; one -1 allowed
  Tensor reshape(const Shape& shape) const;    // view if possible, else a contiguous copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops `dim`
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;     // broadcast view, stride 0 on new dims
  Tensor flatten() const { return reshape({numel()}); }

  // Copies.
  Tensor contiguous() const;                   // self if already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  void copy_(const Tensor& src);               // same shape (or broadcastable), any strides
  void fill_(double value);
  void zero_() { fill_(0.0); }

  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;  // contiguous copy on the host
  std::string str(int64_t max_elems = 16) const;

  int64_t normalize_dim(int64_t d) const;  // negative dims count from the end

 private:
  Tensor(std::shared_ptr<Storage> s, Shape shape, Shape strides, int64_t offset, DType t)
      : storage_(std::move(s)), shape_(std::move(shape)), strides_(std::move(strides)),
        offset_(offset), dtype_(t) {}
  Tensor with_layout(Shape shape, Shape strides, int64_t offset) const {
    return Tensor(storage_, std::move(shape), std::move(strides), offset, dtype_);
  }

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

}  // namespace lopper
