// safetensors: round trips, and hostile or truncated files giving clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <filesystem>

#include "core/ops.h"
#include "nn/safetensors.h"

using namespace lopper;

namespace {
std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("lopper_" + name)).string();
}

// A file image: 8-byte length, header text, data bytes.
std::string image(const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  std::memcpy(s.data(), &n, 8);
  return s + header + std::string(data_bytes, '\x01');
}

std::string error_of(const std::string& img) {
  try {
    nn::parse_safetensors(img.data(), img.size(), DType::f32, "test");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
  Generator g(1);
  nn::StateDict sd;
  sd["a.weight"] = normal({3, 5}, 0, 1, g).transpose(0, 1);  // non-contiguous is written contiguous
  sd["b.ids"] = Tensor::from_vector<int64_t>({1, -2, 3}, {3});
  sd["c.mask"] = Tensor::from_vector<uint8_t>({1, 0}, {2});
  sd["d.half"] = normal({4}, 0, 1, g).to(DType::bf16);
  sd["e.empty"] = Tensor::zeros({0, 3});
  std::string path = tmp_path("roundtrip.safetensors");
  nn::save_safetensors(path, sd, {{"format", "pt"}});
  nn::SafetensorsContents c = nn::load_safetensors(path);
  EXPECT_EQ(c.metadata.at("format"), "pt");
  EXPECT_EQ(max_abs_diff(c.tensors.at("a.weight"), sd["a.weight"]), 0.0);
  EXPECT_EQ(c.tensors.at("b.ids").to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(c.tensors.at("c.mask").dtype(), DType::u8);
  EXPECT_EQ(c.tensors.at("d.half").dtype(), DType::f32);  // floats load as f32 by default
  EXPECT_EQ(max_abs_diff(c.tensors.at("d.half"), sd["d.half"].to(DType::f32)), 0.0);
  EXPECT_EQ(c.tensors.at("e.empty").shape(), (Shape{0, 3}));
  nn::SafetensorsContents b = nn::load_safetensors(path, DType::bf16);
  EXPECT_EQ(b.tensors.at("a.weight").dtype(), DType::bf16);
  std::filesystem::remove(path);
}

TEST(Safetensors, F16IsConverted) {
  // 1.0, -2.0, 0.5, 65504 (max half), a subnormal 2^-24.
  std::vector<uint16_t> h = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001};
  std::string hdr = R"({"x":{"dtype":"F16","shape":[5],"data_offsets":[0,10]}})";
  std::string img = image(hdr, 0);
  img.append(reinterpret_cast<const char*>(h.data()), 10);
  auto c = nn::parse_safetensors(img.data(), img.size(), DType::f32);
  auto v = c.tensors.at("x").to_vector<float>();
  EXPECT_EQ(v, (std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24)}));
}

TEST(Safetensors, HostileFilesGiveClearErrors) {
  EXPECT_NE(error_of(std::string(4, '\0')).find("too short"), std::string::npos);
  std::string past = image("{}", 0);
  uint64_t huge = 1000;
  std::memcpy(past.data(), &huge, 8);
  EXPECT_NE(error_of(past).find("past the end"), std::string::npos);
  EXPECT_NE(error_of(image("{not json", 0)).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1)).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16)).find("needs 12 bytes"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)).find("overlap"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)).find("non-negative"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8)).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of(image(R"([1,2])", 0)).find("JSON object"), std::string::npos);
  EXPECT_THROW(nn::load_safetensors("/nonexistent.safetensors"), Error);
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  // Flip bytes of a valid file's header: each result must parse or throw lopper::Error.
  nn::StateDict sd{{"w", Tensor::ones({4, 4})}, {"b", Tensor::zeros({4})}};
  std::string path = tmp_path("fuzz.safetensors");
  nn::save_safetensors(path, sd);
  std::string good;
  {
    std::ifstream f(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(f), {});
  }
  Generator g(3);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string img = good;
    int flips = 1 + static_cast<int>(g.next_below(4));
    for (int k = 0; k < flips; ++k) {
      size_t at = g.next_below(std::min<size_t>(img.size(), 160));
      img[at] = static_cast<char>(g.next_below(256));
    }
    if (g.next_below(4) == 0) img.resize(g.next_below(img.size()));
    try {
      nn::parse_safetensors(img.data(), img.size(), DType::f32);
    } catch (const Error&) {
    }
  }
  std::filesystem::remove(path);
}
