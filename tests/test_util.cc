#include "tests/test_util.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

#include "formats/safetensors.h"

namespace loramux::testing {

std::vector<std::string> TestDevices() {
  std::vector<std::string> devices = {"cpu"};
  if (torch::cuda::is_available()) devices.push_back("cuda:0");
  return devices;
}

std::string DeviceName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name;
  for (char c : info.param) {
    if (std::isalnum(static_cast<unsigned char>(c))) name += c;
  }
  return name;
}

std::string DataPath(const std::string& relative) {
  return std::string(LORAMUX_TEST_DATA) + "/" + relative;
}

std::vector<int64_t> ToVector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kInt64).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::map<std::string, torch::Tensor> LoadGolden(const std::string& relative) {
  auto file = SafetensorsFile::Open(DataPath(relative));
  TORCH_CHECK(file.ok(), std::string(file.status().message()));
  std::map<std::string, torch::Tensor> out;
  for (const TensorView& view : (*file)->tensors()) {
    const auto dtype = view.dtype == DType::kI64 ? torch::kInt64 : torch::kFloat32;
    TORCH_CHECK(view.dtype == DType::kI64 || view.dtype == DType::kF32, view.name);
    torch::Tensor t = torch::empty(view.shape, dtype);
    std::memcpy(t.data_ptr(), view.data, view.nbytes);
    out[view.name] = t;
  }
  return out;
}

std::unique_ptr<LlamaModel> LoadModel(const std::string& name, torch::ScalarType dtype,
                                      const std::string& device) {
  auto model = LlamaModel::Load(DataPath(name), torch::Device(device), dtype);
  TORCH_CHECK(model.ok(), std::string(model.status().message()));
  return *std::move(model);
}

TestRun RunBatch(const LlamaModel& model, const std::vector<TestSequence>& sequences, int steps) {
  KvCache cache(model.config(), 8 << 20, model.device(), model.dtype());
  const int64_t n = static_cast<int64_t>(sequences.size());
  TestRun run;
  run.step_logits.assign(n, torch::Tensor());
  run.tokens.assign(n, {});
  std::vector<std::vector<torch::Tensor>> steps_logits(n);
  std::vector<int64_t> lengths(n);
  for (int step = 0; step < steps; ++step) {
    ForwardBatch batch;
    for (int64_t i = 0; i < n; ++i) {
      const bool prefill = step == 0;
      SequenceChunk chunk;
      chunk.cache_id = i;
      chunk.offset = static_cast<int64_t>(batch.token_ids.size());
      if (prefill) {
        const auto& prompt = sequences[i].prompt;
        batch.token_ids.insert(batch.token_ids.end(), prompt.begin(), prompt.end());
        chunk.length = static_cast<int64_t>(prompt.size());
        chunk.all_logits = true;
      } else {
        batch.token_ids.push_back(run.tokens[i].back());
        chunk.start_pos = lengths[i];
        chunk.length = 1;
      }
      TORCH_CHECK(cache.Reserve(i, chunk.start_pos + chunk.length));
      lengths[i] = chunk.start_pos + chunk.length;
      batch.chunks.push_back(chunk);
      if (sequences[i].adapter) {
        batch.adapters.push_back(
            {sequences[i].adapter, sequences[i].scale, chunk.offset, chunk.offset + chunk.length});
      }
    }
    auto logits = model.Forward(batch, cache);
    TORCH_CHECK(logits.ok(), std::string(logits.status().message()));
    int64_t row = 0;
    for (int64_t i = 0; i < n; ++i) {
      torch::Tensor last;
      if (step == 0) {
        const int64_t len = batch.chunks[i].length;
        run.prompt_logits.push_back(logits->narrow(0, row, len).cpu());
        last = logits->select(0, row + len - 1).cpu();
        row += len;
      } else {
        last = logits->select(0, row++).cpu();
      }
      steps_logits[i].push_back(last);
      run.tokens[i].push_back(last.argmax().item<int64_t>());
    }
  }
  for (int64_t i = 0; i < n; ++i) run.step_logits[i] = torch::stack(steps_logits[i]);
  return run;
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32) - b.to(torch::kFloat32)).abs().max().item<double>();
}

}  // namespace loramux::testing
