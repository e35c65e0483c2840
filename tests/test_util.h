// Helpers shared by the engine tests: golden data access and a direct greedy runner.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/kv_cache.h"
#include "model/llama_model.h"
#include "tests/test_files.h"  // ReadFile, WriteFile, MakeTempDir

namespace loramux::testing {

std::string DataPath(const std::string& relative);  // under tests/data
// The devices the engine's tests run on: "cpu", and "cuda:0" where LibTorch sees a GPU. Tests
// parameterised over it (INSTANTIATE_TEST_SUITE_P(..., ValuesIn(TestDevices()), DeviceName))
// run unchanged on a CUDA build.
std::vector<std::string> TestDevices();
// A test-name suffix for a device ("cpu", "cuda0").
std::string DeviceName(const ::testing::TestParamInfo<std::string>& info);
std::vector<int64_t> ToVector(const torch::Tensor& t);  // integer tensor -> ids

// All tensors of a golden safetensors file, as CPU tensors of their stored dtype.
std::map<std::string, torch::Tensor> LoadGolden(const std::string& relative);

// tests/data/<name> on `device` ("cpu", "cuda:0", ...) in `dtype`.
std::unique_ptr<LlamaModel> LoadModel(const std::string& name,
                                      torch::ScalarType dtype = torch::kFloat32,
                                      const std::string& device = "cpu");

// One request for RunBatch: a prompt, its adapter (or none) and scale.
struct TestSequence {
  std::vector<int64_t> prompt;
  const AdapterWeights* adapter = nullptr;
  double scale = 1.0;
};

struct TestRun {
  std::vector<torch::Tensor> prompt_logits;  // per sequence [L, vocab]
  std::vector<torch::Tensor> step_logits;  // per sequence [steps, vocab]; step 0 = last prompt row
  std::vector<std::vector<int64_t>> tokens;  // per sequence, greedy tokens
};

// Prefills all sequences in one packed batch (all logits), then decodes `steps - 1` greedy steps
// with all sequences batched together, so `steps` tokens come out per sequence.
TestRun RunBatch(const LlamaModel& model, const std::vector<TestSequence>& sequences, int steps);

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace loramux::testing
