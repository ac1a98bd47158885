// How the processes of a data-parallel run exchange tensors: one process per CPU node or per
// GPU, started by mpirun or srun (no launcher of our own), each with a rank in [0, size).
// Implementations: SingleProcess (nothing to exchange), MPI on CPU buffers
// (trainers/communicator_mpi.cpp, built with LOPPER_MPI), NCCL on GPU buffers
// (trainers/communicator_nccl.cpp, built with LOPPER_CUDA where NCCL is found).
// The trainer averages gradients through all_reduce_gradients, packed into buckets.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace lopper::trainers {

enum class Reduce { sum, mean };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This process's index among the ranks on its node: which GPU it takes (cuda:local_rank).
  virtual int local_rank() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"
  // In place, on every rank, over a contiguous f32 or f64 tensor of the same shape everywhere.
  virtual void all_reduce(const Tensor& t, Reduce op) = 0;
  // In place: every rank gets root's values.
  virtual void broadcast(const Tensor& t, int root) = 0;
  // (n, ...) on each rank -> (size * n, ...), rank 0's rows first; same shape on every rank.
  virtual Tensor all_gather(const Tensor& t) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now with `code` (MPI_Abort): for an error seen by one rank,
  // which the others, waiting in a collective, would never see. One process: returns.
  virtual void abort(int code) noexcept = 0;
};

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string name() const override { return "single"; }
  void all_reduce(const Tensor&, Reduce) override {}
  void broadcast(const Tensor&, int) override {}
  Tensor all_gather(const Tensor& t) override { return t; }
  void barrier() override {}
  void abort(int) noexcept override {}
};

// MPI when this process was started by mpirun or srun with more than one rank and Lopper
// was built with LOPPER_MPI; SingleProcess otherwise. Throws if launched as several ranks
// by a build without MPI (each would train alone and write the same files).
std::unique_ptr<Communicator> make_communicator();

// "rank R of N" when a launcher started this process as one of several ranks, "" otherwise;
// read from the launcher's environment, for messages before (or without) a communicator.
std::string launcher_rank_label();

// NCCL over this process's GPU `device`, with the ranks and NCCL's unique id taken from
// `bootstrap` (MPI across processes; SingleProcess for one GPU), which it keeps for abort.
// Throws in a build without NCCL (LOPPER_CUDA where libnccl and nccl.h are found beside
// the CUDA toolkit).
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, int device);

// Replaces each parameter's gradient by its mean over the ranks: the gradients are copied
// into contiguous buckets of at most bucket_bytes (same dtype and device in a bucket), one
// all_reduce per bucket, and copied back. Parameters without a gradient are skipped: every
// rank runs the same graph, so they are the same on every rank.
void all_reduce_gradients(Communicator& comm, const std::vector<Variable>& params,
                          size_t bucket_bytes = size_t{25} << 20);

// Every rank gets rank 0's values of these tensors (initial weights).
void broadcast_tensors(Communicator& comm, const std::vector<Tensor>& tensors);

}  // namespace lopper::trainers
