// How the processes of a data-parallel run exchange gradients. The trainer calls
// all_reduce_mean on every trainable parameter after backward; this file has the
// single-process implementation (nothing to exchange). Not a launcher: processes are
// started by mpirun or srun, and the MPI and NCCL implementations come with the
// data-parallel issue.
#pragma once
#include <vector>

#include "autograd/variable.h"

namespace lopper::trainers {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Replaces each parameter's gradient by its mean over all processes (same order everywhere).
  virtual void all_reduce_mean(const std::vector<Variable>& params) = 0;
};

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_mean(const std::vector<Variable>&) override {}
};

}  // namespace lopper::trainers
