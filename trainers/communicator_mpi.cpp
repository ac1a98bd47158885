// The MPI communicator: CPU buffers (a CUDA tensor goes through the host), MPI_COMM_WORLD,
// every call checked. Built with LOPPER_MPI.
#include <mpi.h>

#include "core/ops.h"
#include "trainers/communicator.h"

// LOPPER_MPI_CHECK(MPI_Allreduce(...)): throws lopper::Error with MPI's message, file and line.
#define LOPPER_MPI_CHECK(call)                                                       \
  do {                                                                               \
    int lopper_mpi_rc = (call);                                                      \
    if (lopper_mpi_rc != MPI_SUCCESS) {                                              \
      char lopper_mpi_msg[MPI_MAX_ERROR_STRING];                                     \
      int lopper_mpi_len = 0;                                                        \
      MPI_Error_string(lopper_mpi_rc, lopper_mpi_msg, &lopper_mpi_len);              \
      LOPPER_FAIL("[mpi] ", #call, " failed: ", std::string(lopper_mpi_msg, lopper_mpi_len)); \
    }                                                                                \
  } while (0)

namespace lopper::trainers {
namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::i32: return MPI_INT32_T;
    default: LOPPER_FAIL("[mpi] tensors of ", dtype_name(t), " are not exchanged");
  }
}

class Mpi final : public Communicator {
 public:
  Mpi() {
    int init = 0;
    LOPPER_MPI_CHECK(MPI_Initialized(&init));
    if (!init) {
      int provided = 0;
      LOPPER_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owner_ = true;
    }
    LOPPER_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    LOPPER_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    LOPPER_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    MPI_Comm node;  // the ranks that share this node's memory
    LOPPER_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    LOPPER_MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    LOPPER_MPI_CHECK(MPI_Comm_free(&node));
  }
  ~Mpi() override {
    int done = 0;
    MPI_Finalized(&done);
    if (owner_ && !done) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string name() const override { return "mpi"; }

  void all_reduce(const Tensor& t, Reduce op) override {
    LOPPER_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "[mpi] all_reduce of a ", dtype_name(t.dtype()),
                 " tensor (f32 or f64 only)");
    on_host(t, [&](const Tensor& h) {
      LOPPER_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, h.raw_data(), static_cast<int>(h.numel()), mpi_type(h.dtype()),
                                     MPI_SUM, MPI_COMM_WORLD));
      if (op == Reduce::mean) Tensor(h).copy_(scale(h, 1.0 / size_));
    });
  }
  void broadcast(const Tensor& t, int root) override {
    on_host(t, [&](const Tensor& h) {
      LOPPER_MPI_CHECK(MPI_Bcast(h.raw_data(), static_cast<int>(h.numel() * h.itemsize()), MPI_BYTE, root, MPI_COMM_WORLD));
    });
  }
  Tensor all_gather(const Tensor& t) override {
    Tensor h = t.contiguous().to(Device::cpu());
    Shape s = h.shape();
    LOPPER_CHECK(!s.empty(), "[mpi] all_gather of a scalar");
    s[0] *= size_;
    Tensor out = Tensor::empty(s, h.dtype());
    int bytes = static_cast<int>(h.numel() * h.itemsize());
    LOPPER_MPI_CHECK(MPI_Allgather(h.raw_data(), bytes, MPI_BYTE, out.raw_data(), bytes, MPI_BYTE, MPI_COMM_WORLD));
    return out.to(t.device());
  }
  void barrier() override { LOPPER_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }
  void abort(int code) noexcept override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  // f(host view of t), then t updated from it: in place for a contiguous CPU tensor.
  template <class F>
  void on_host(const Tensor& t, F&& f) {
    LOPPER_CHECK(t.numel() <= INT32_MAX, "[mpi] ", t.numel(), " elements in one call (at most 2^31 - 1)");
    if (t.device().is_cpu() && t.is_contiguous()) return f(t);
    Tensor h = t.contiguous().to(Device::cpu());
    f(h);
    Tensor(t).copy_(h.to(t.device()));
  }

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool owner_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<Mpi>(); }

}  // namespace lopper::trainers
