// Tensor views, copies, casts and the allocator's statistics.
#include <gtest/gtest.h>

#include "core/ops.h"

using namespace lopper;

namespace {
Tensor iota(const Shape& s, DType t = DType::f32) {
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, s).to(t);
}
}  // namespace

TEST(Tensor, ContiguousStridesAndNumel) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % kCpuAlignment, 0u);
}

TEST(Tensor, TransposeIsAViewWithSwappedStrides) {
  Tensor t = iota({2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_TRUE(tt.shares_storage(t));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.contiguous().to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, PermuteSliceSelect) {
  Tensor t = iota({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});  // (4, 2, 3)
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.select(0, 1).contiguous().to_vector<float>(), (std::vector<float>{1, 5, 9, 13, 17, 21}));
  Tensor s = t.slice(2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.select(0, 1).contiguous().to_vector<float>(), (std::vector<float>{13, 15, 17, 19, 21, 23}));
  EXPECT_EQ(t.slice(1, -1, 3).shape(), (Shape{2, 1, 4}));
}

TEST(Tensor, ViewReshapeAndInferredDim) {
  Tensor t = iota({2, 6});
  EXPECT_EQ(t.view({3, -1}).shape(), (Shape{3, 4}));
  EXPECT_THROW(t.transpose(0, 1).view({12}), Error);
  Tensor r = t.transpose(0, 1).reshape({12});
  EXPECT_EQ(r.to_vector<float>()[1], 6.0f);
  EXPECT_THROW(t.view({5, -1}), Error);
}

TEST(Tensor, ExpandBroadcastsWithZeroStride) {
  Tensor b = iota({3});
  Tensor e = b.expand({2, 3});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{0, 1, 2, 0, 1, 2}));
  EXPECT_THROW(iota({2}).expand({3}), Error);
  EXPECT_EQ(iota({2, 1}).unsqueeze(0).squeeze(2).shape(), (Shape{1, 2}));
}

TEST(Tensor, CopyIntoStridedDestination) {
  Tensor t = Tensor::zeros({3, 3});
  t.slice(1, 1, 2).copy_(Tensor::full({3, 1}, 7.0));
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 7, 0, 0, 7, 0, 0, 7, 0}));
}

TEST(Tensor, CastRoundTripsAndBf16RoundsToNearestEven) {
  Tensor t = Tensor::from_vector<float>({1.0f, -2.5f, 3.14159f, 1e-3f}, {4});
  Tensor b = t.to(DType::bf16);
  EXPECT_EQ(b.itemsize(), 2u);
  auto back = b.to(DType::f32).to_vector<float>();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(back[i], t.to_vector<float>()[i], std::abs(t.to_vector<float>()[i]) / 128);
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(static_cast<float>(BFloat16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(BFloat16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(Tensor::from_vector<float>({2.7f, -1.2f}, {2}).to(DType::i64).to_vector<int64_t>(),
            (std::vector<int64_t>{2, -1}));
  EXPECT_EQ(Tensor::arange(4, DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(Tensor, ErrorsNameTheOpAndShapes) {
  try {
    matmul(Tensor::zeros({8, 384}), Tensor::zeros({768, 384}));
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[matmul]"), std::string::npos) << m;
    EXPECT_NE(m.find("(8, 384)"), std::string::npos) << m;
    EXPECT_NE(m.find("(768, 384)"), std::string::npos) << m;
  }
  EXPECT_THROW(add(Tensor::zeros({2, 3}), Tensor::zeros({4})), Error);
  EXPECT_THROW(Tensor::zeros({2}).data<double>(), Error);
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_EQ(Device::parse("cuda:3").index, 3);
}

TEST(Allocator, StatsTrackLiveBytes) {
  Allocator& a = cpu_allocator();
  int64_t before = a.stats().bytes_in_use;
  {
    Tensor t = Tensor::empty({1024}, DType::f64);
    EXPECT_EQ(a.stats().bytes_in_use, before + 8192);
    EXPECT_GE(a.stats().peak_bytes, before + 8192);
  }
  EXPECT_EQ(a.stats().bytes_in_use, before);
}
