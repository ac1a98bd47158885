// Choosing the communicator, and the gradient all-reduce in buckets.
#include "trainers/communicator.h"

#include <cstdlib>
#include <string>

#include "core/ops.h"

namespace lopper::trainers {

#ifdef LOPPER_WITH_MPI
std::unique_ptr<Communicator> make_mpi_communicator();  // trainers/communicator_mpi.cpp
#endif

namespace {
// The world size a launcher announced in the environment (Open MPI's mpirun, PMI as used
// by srun, Slurm's job step: not SLURM_NTASKS, which a batch script's own single process
// sees too), or 0 when none did.
int launcher_world_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return std::getenv("PMIX_RANK") ? 2 : 0;  // PMIx without a size: at least a launcher
}
}  // namespace

std::string launcher_rank_label() {
  int world = launcher_world_size();
  if (world <= 1) return "";
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "PMIX_RANK"})
    if (const char* s = std::getenv(v)) return "rank " + std::string(s) + " of " + std::to_string(world);
  return "";
}

std::unique_ptr<Communicator> make_communicator() {
  int world = launcher_world_size();
#ifdef LOPPER_WITH_MPI
  if (world > 1) return make_mpi_communicator();
#else
  LOPPER_CHECK(world <= 1, "[communicator] started as ", world,
               " ranks, but this build has no MPI (configure with -DLOPPER_MPI=ON, libopenmpi-dev)");
#endif
  return std::make_unique<SingleProcess>();
}

#ifndef LOPPER_WITH_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, int) {
  LOPPER_FAIL("[communicator] this build has no NCCL (a CUDA build finds it beside the toolkit: nccl.h, libnccl)");
}
#endif

void all_reduce_gradients(Communicator& comm, const std::vector<Variable>& params, size_t bucket_bytes) {
  if (comm.size() == 1) return;
  std::vector<Tensor> grads;
  for (const Variable& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  for (size_t i = 0; i < grads.size();) {
    // Bucket [i, j): same dtype and device, at most bucket_bytes (or one larger tensor).
    auto size_of = [](const Tensor& t) { return static_cast<size_t>(t.numel()) * t.itemsize(); };
    size_t j = i + 1, bytes = size_of(grads[i]);
    while (j < grads.size() && grads[j].dtype() == grads[i].dtype() && grads[j].device() == grads[i].device() &&
           bytes + size_of(grads[j]) <= bucket_bytes)
      bytes += size_of(grads[j++]);
    std::vector<Tensor> flat;
    for (size_t k = i; k < j; ++k) flat.push_back(grads[k].reshape({-1}));
    Tensor bucket = concat(flat, 0);  // (sum of numel)
    comm.all_reduce(bucket, Reduce::mean);
    int64_t off = 0;
    for (size_t k = i; k < j; ++k) {
      int64_t n = grads[k].numel();
      Tensor g = grads[k];
      g.copy_(bucket.slice(0, off, off + n).view(g.shape()));
      off += n;
    }
    i = j;
  }
}

void broadcast_tensors(Communicator& comm, const std::vector<Tensor>& tensors) {
  if (comm.size() == 1) return;
  for (const Tensor& t : tensors) {
    if (t.is_contiguous()) {
      comm.broadcast(t, 0);
      continue;
    }
    Tensor c = t.contiguous();
    comm.broadcast(c, 0);
    Tensor(t).copy_(c);
  }
}

}  // namespace lopper::trainers
