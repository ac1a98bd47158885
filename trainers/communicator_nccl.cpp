// The NCCL communicator: CUDA buffers, one rank per GPU, on the default stream the CUDA
// backend launches on. Ranks and the ncclUniqueId come from a bootstrap communicator (MPI
// across processes, or SingleProcess for one GPU). Built with LOPPER_CUDA where NCCL is found.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "core/cuda/check.h"
#include "core/ops.h"
#include "trainers/communicator.h"

// LOPPER_NCCL_CHECK(ncclAllReduce(...)): throws lopper::Error with NCCL's message, file and line.
#define LOPPER_NCCL_CHECK(call)                                                               \
  do {                                                                                        \
    ncclResult_t lopper_nccl_rc = (call);                                                     \
    if (lopper_nccl_rc != ncclSuccess)                                                        \
      LOPPER_FAIL("[nccl] ", #call, " failed: ", ncclGetErrorString(lopper_nccl_rc));        \
  } while (0)

namespace lopper::trainers {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i64: return ncclInt64;
    case DType::i32: return ncclInt32;
    default: LOPPER_FAIL("[nccl] tensors of ", dtype_name(t), " are not exchanged");
  }
}

class Nccl final : public Communicator {
 public:
  Nccl(std::unique_ptr<Communicator> bootstrap, int device)
      : boot_(std::move(bootstrap)), rank_(boot_->rank()), size_(boot_->size()), device_(device) {
    LOPPER_CUDA_CHECK(cudaSetDevice(device));
    ncclUniqueId id{};
    if (rank_ == 0) LOPPER_NCCL_CHECK(ncclGetUniqueId(&id));
    Tensor bytes = Tensor::empty({static_cast<int64_t>(sizeof id)}, DType::u8);
    std::memcpy(bytes.raw_data(), &id, sizeof id);
    boot_->broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw_data(), sizeof id);
    LOPPER_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
  }
  ~Nccl() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return boot_->local_rank(); }
  std::string name() const override { return "nccl"; }

  void all_reduce(const Tensor& t, Reduce op) override {
    LOPPER_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "[nccl] all_reduce of a ", dtype_name(t.dtype()),
                 " tensor (f32 or f64 only)");
    on_device(t, [&](const Tensor& d) {
      LOPPER_NCCL_CHECK(ncclAllReduce(d.raw_data(), d.raw_data(), static_cast<size_t>(d.numel()), nccl_type(d.dtype()),
                                      op == Reduce::mean ? ncclAvg : ncclSum, comm_, nullptr));
    });
  }
  void broadcast(const Tensor& t, int root) override {
    on_device(t, [&](const Tensor& d) {
      LOPPER_NCCL_CHECK(ncclBroadcast(d.raw_data(), d.raw_data(), static_cast<size_t>(d.numel()) * d.itemsize(), ncclUint8,
                                      root, comm_, nullptr));
    });
  }
  Tensor all_gather(const Tensor& t) override {
    Tensor d = t.contiguous().to(Device::cuda(device_));
    Shape s = d.shape();
    LOPPER_CHECK(!s.empty(), "[nccl] all_gather of a scalar");
    s[0] *= size_;
    Tensor out = Tensor::empty(s, d.dtype(), Device::cuda(device_));
    LOPPER_NCCL_CHECK(ncclAllGather(d.raw_data(), out.raw_data(), static_cast<size_t>(d.numel()) * d.itemsize(), ncclUint8,
                                    comm_, nullptr));
    LOPPER_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    return out.to(t.device());
  }
  void barrier() override {
    Tensor one = Tensor::ones({1}, DType::f32, Device::cuda(device_));
    all_reduce(one, Reduce::sum);
  }
  void abort(int code) noexcept override {
    ncclCommAbort(comm_);  // leaves no collective of ours waiting, then the job ends
    comm_ = nullptr;
    boot_->abort(code);
  }

 private:
  // f(t on this rank's GPU, contiguous), then t updated from it; waits for the collective.
  template <class F>
  void on_device(const Tensor& t, F&& f) {
    const Device here = Device::cuda(device_);
    Tensor d = t.device() == here && t.is_contiguous() ? t : t.contiguous().to(here);
    f(d);
    LOPPER_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    if (!d.shares_storage(t)) Tensor(t).copy_(d.to(t.device()));
  }

  std::unique_ptr<Communicator> boot_;  // the ranks' other channel: MPI, or SingleProcess
  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, int device) {
  return std::make_unique<Nccl>(std::move(bootstrap), device);
}

}  // namespace lopper::trainers
