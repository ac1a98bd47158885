// The NCCL communicator on one GPU (one rank, bootstrapped by SingleProcess): every
// collective called for real, with one rank's definitions (sum and mean are the tensor
// itself, all_gather the tensor), and the bucketed gradient all-reduce on CUDA gradients.
// Skips where the build has no NCCL or the machine no GPU.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "trainers/communicator.h"

using namespace lopper;

TEST(Nccl, OneRankCollectivesOnTheGpu) {
#ifndef LOPPER_WITH_NCCL
  GTEST_SKIP() << "this build has no NCCL (a CUDA build where nccl.h and libnccl are found)";
#else
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: NCCL runs only where a GPU is present";
  auto c = trainers::make_nccl_communicator(std::make_unique<trainers::SingleProcess>(), 0);
  EXPECT_EQ(c->name(), "nccl");
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->local_rank(), 0);
  Generator g(3);
  Tensor x = normal({5, 7}, 0, 1, g), d = x.to(Device::cuda(0));
  c->all_reduce(d, trainers::Reduce::sum);
  EXPECT_EQ(max_abs_diff(d.to(Device::cpu()), x), 0.0);
  c->all_reduce(d, trainers::Reduce::mean);
  EXPECT_EQ(max_abs_diff(d.to(Device::cpu()), x), 0.0);
  c->broadcast(d, 0);
  EXPECT_EQ(max_abs_diff(d.to(Device::cpu()), x), 0.0);
  Tensor all = c->all_gather(d);
  EXPECT_EQ(all.shape(), x.shape());
  EXPECT_EQ(max_abs_diff(all.to(Device::cpu()), x), 0.0);
  // A CPU tensor goes through the GPU and comes back.
  Tensor h = x.clone();
  c->all_reduce(h, trainers::Reduce::sum);
  EXPECT_EQ(max_abs_diff(h, x), 0.0);
  c->barrier();
#endif
}
