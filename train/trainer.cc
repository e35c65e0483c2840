#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "adapters/adapter_plan.h"
#include "common/durable_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tensor/tensor_util.h"
#include "train/train_data.h"

namespace loramux {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// Examples [begin, end) of `order`, right-padded: tokens [B, T], loss_mask [B, T] true on
// completion tokens.
struct Batch {
  torch::Tensor tokens, loss_mask;
  int64_t num_tokens = 0;      // real (unpadded) tokens
  int64_t num_completion = 0;  // tokens the loss is on
};

Batch MakeBatch(const std::vector<TrainExample>& examples, const std::vector<int64_t>& order,
                size_t begin, size_t end) {
  int64_t len = 0;
  for (size_t i = begin; i < end; ++i)
    len = std::max<int64_t>(len, examples[order[i]].tokens.size());
  const int64_t rows = static_cast<int64_t>(end - begin);
  Batch b;
  b.tokens = torch::zeros({rows, len}, torch::kInt64);
  b.loss_mask = torch::zeros({rows, len}, torch::kBool);
  auto t = b.tokens.accessor<int64_t, 2>();
  auto m = b.loss_mask.accessor<bool, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const TrainExample& ex = examples[order[begin + r]];
    for (size_t j = 0; j < ex.tokens.size(); ++j) {
      t[r][j] = ex.tokens[j];
      m[r][j] = static_cast<int64_t>(j) >= ex.prompt_length;
    }
    b.num_tokens += static_cast<int64_t>(ex.tokens.size());
    b.num_completion += static_cast<int64_t>(ex.tokens.size()) - ex.prompt_length;
  }
  return b;
}

// Mean completion-token loss over `indices` (no gradients).
double EvalLoss(const TrainableModel& model, const std::vector<TrainExample>& examples,
                const std::vector<int64_t>& indices, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < indices.size(); i += batch_size) {
    const Batch b = MakeBatch(examples, indices, i, std::min(indices.size(), i + batch_size));
    auto [loss, n] = CompletionLoss(model.Forward(b.tokens), b.tokens, b.loss_mask);
    sum += loss.item<double>();
    count += n;
  }
  return sum / static_cast<double>(std::max<int64_t>(count, 1));
}

std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  return s >= 3600 ? absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                   : absl::StrFormat("%d:%02d", s / 60, s % 60);
}

// What a checkpoint must agree on to be resumed.
std::string Fingerprint(const TrainOptions& o) {
  Json j;
  j["model_dir"] = o.model_dir;
  j["data"] = o.data;
  j["adapter"] = o.full ? std::string("full") : PeftConfigJson(o.adapter);
  j["epochs"] = o.epochs;
  j["max_steps"] = o.max_steps;
  j["batch_size"] = o.batch_size;
  j["grad_accum"] = o.grad_accum;
  j["lr"] = o.lr;
  j["weight_decay"] = o.weight_decay;
  j["warmup_ratio"] = o.warmup_ratio;
  j["warmup_steps"] = o.warmup_steps;
  j["max_grad_norm"] = o.max_grad_norm;
  j["seed"] = o.seed;
  j["eval_fraction"] = o.eval_fraction;
  j["max_seq_len"] = o.max_seq_len;
  j["dtype"] = static_cast<int>(o.dtype);
  return j.dump();
}

absl::Status CheckOptions(const TrainOptions& o) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (o.model_dir.empty()) return bad("--model_dir is required (a HuggingFace model directory)");
  if (o.data.empty()) return bad("--data is required (a JSONL file of examples)");
  if (o.out.empty()) return bad("--out is required (the directory to write the adapter to)");
  if (o.epochs < 1) return bad(absl::StrCat("--epochs must be >= 1, got ", o.epochs));
  if (o.max_steps < 0) return bad(absl::StrCat("--max_steps must be >= 0, got ", o.max_steps));
  if (o.batch_size < 1) return bad(absl::StrCat("--batch_size must be >= 1, got ", o.batch_size));
  if (o.grad_accum < 1) return bad(absl::StrCat("--grad_accum must be >= 1, got ", o.grad_accum));
  if (!(o.lr > 0) || !std::isfinite(o.lr))
    return bad(absl::StrCat("--lr must be a positive number, got ", o.lr));
  if (!(o.weight_decay >= 0)) return bad("--weight_decay must be >= 0");
  if (!(o.warmup_ratio >= 0 && o.warmup_ratio <= 1)) return bad("--warmup_ratio must be in [0, 1]");
  if (!(o.max_grad_norm >= 0)) return bad("--max_grad_norm must be >= 0 (0 disables clipping)");
  if (!(o.eval_fraction >= 0 && o.eval_fraction < 1))
    return bad("--eval_fraction must be in [0, 1)");
  if (o.max_seq_len < 0) return bad("--max_seq_len must be >= 0 (0: the model's context)");
  if (!o.full) {
    if (o.adapter.rank < 1) return bad(absl::StrCat("--rank must be >= 1, got ", o.adapter.rank));
    if (!(o.adapter.alpha > 0) || !std::isfinite(o.adapter.alpha))
      return bad("--alpha must be a positive number");
  }
  return absl::OkStatus();
}

class Checkpointer {
 public:
  explicit Checkpointer(const TrainOptions& o)
      : dir_(o.out + "/checkpoint"), fingerprint_(Fingerprint(o)) {}

  // The step to continue from (0 when there is no checkpoint), after loading it.
  absl::StatusOr<int64_t> Restore(TrainableModel& model, torch::optim::Optimizer& optimizer,
                                  std::vector<double>& eval_losses, double& final_loss) const {
    auto text = ReadSmallFile(dir_ + "/trainer_state.json", 1 << 20);
    if (absl::IsNotFound(text.status())) return 0;
    if (!text.ok()) return text.status();
    Json state = Json::parse(*text, nullptr, false);
    if (state.is_discarded() || !state.contains("step")) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir_, "/trainer_state.json is corrupt; remove ", dir_, " to start over"));
    }
    if (state.value("fingerprint", "") != fingerprint_) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir_,
                       " was written by a run with other options (model, data, adapter, batch, "
                       "schedule or seed); "
                       "rerun with those, or remove it to start over"));
    }
    ASSIGN_OR_RETURN(auto params, SafetensorsFile::Open(dir_ + "/params.safetensors"));
    RETURN_IF_ERROR(model.LoadTensors(*params));
    RETURN_IF_ERROR(CatchTorch("loading the optimizer state",
                               [&] { torch::load(optimizer, dir_ + "/optimizer.pt"); }));
    eval_losses = state.value("eval_losses", std::vector<double>{});
    final_loss = state.value("final_loss", 0.0);
    return state["step"].get<int64_t>();
  }

  absl::Status Save(const TrainableModel& model, const torch::optim::Optimizer& optimizer,
                    int64_t step, const std::vector<double>& eval_losses, double final_loss) const {
    RETURN_IF_ERROR(MakeDirs(dir_));
    RETURN_IF_ERROR(ReplaceFile(dir_ + "/params.safetensors",
                                SerializeTensors(model.NamedTensors(), model.dtype())));
    const std::string tmp = dir_ + "/optimizer.pt.tmp";
    RETURN_IF_ERROR(CatchTorch("saving the optimizer state", [&] { torch::save(optimizer, tmp); }));
    std::error_code error;
    std::filesystem::rename(tmp, dir_ + "/optimizer.pt", error);
    if (error) return absl::InternalError(absl::StrCat("renaming ", tmp, ": ", error.message()));
    Json state;
    state["step"] = step;
    state["eval_losses"] = eval_losses;
    state["final_loss"] = final_loss;
    state["fingerprint"] = fingerprint_;
    return ReplaceFile(dir_ + "/trainer_state.json", state.dump(2) + "\n");
  }

 private:
  std::string dir_;
  std::string fingerprint_;
};

// Writes the result and checks that the server's loader accepts an adapter against the base.
absl::Status WriteOutput(const TrainOptions& o, const TrainableModel& model,
                         const LlamaModel& base) {
  if (o.full)
    return WriteCheckpointDirectory(o.out, o.model_dir, model.NamedTensors(), o.save_dtype);
  const std::string config = PeftConfigJson(o.adapter);
  RETURN_IF_ERROR(WriteAdapterDirectory(o.out, config, model.NamedTensors()));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(o.out + "/adapter_model.safetensors"));
  auto plan = PlanAdapter("trained", AdapterFormat::kPeft, config, *file, base, AdapterLimits{});
  if (!plan.ok())
    return absl::InternalError(
        absl::StrCat("the written adapter does not load: ", plan.status().message()));
  return absl::OkStatus();
}

int64_t OptimizerStateBytes(const TrainableModel& model) {
  int64_t bytes = 0;
  for (const torch::Tensor& p : model.parameters()) bytes += 2 * p.numel() * p.element_size();
  return bytes;
}

}  // namespace

double ScheduledLr(double lr, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay = total - warmup;
  if (decay <= 1) return lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(decay - 1);
  return lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

absl::StatusOr<TrainResult> Train(const TrainOptions& o, std::ostream& out) {
  RETURN_IF_ERROR(CheckOptions(o));
  ConfigureThreads(o.threads);
  ASSIGN_OR_RETURN(auto base, LlamaModel::Load(o.model_dir, torch::kCPU, torch::kFloat32));
  ASSIGN_OR_RETURN(auto codec, TextCodec::Load(o.model_dir));
  const int64_t max_len = o.max_seq_len > 0
                              ? std::min(o.max_seq_len, base->config().max_position_embeddings)
                              : base->config().max_position_embeddings;
  ASSIGN_OR_RETURN(std::vector<TrainExample> examples,
                   ReadTrainData(o.data, base->config(), *codec, max_len));

  // The held-out split: a seeded shuffle of all examples, the first ones held out.
  std::vector<int64_t> all(examples.size());
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 split_rng(o.seed);
  std::shuffle(all.begin(), all.end(), split_rng);
  int64_t held = std::llround(o.eval_fraction * static_cast<double>(all.size()));
  if (o.eval_fraction > 0 && all.size() >= 2) held = std::max<int64_t>(held, 1);
  held = std::min<int64_t>(held, static_cast<int64_t>(all.size()) - 1);
  const std::vector<int64_t> eval_set(all.begin(), all.begin() + held);
  std::vector<int64_t> train_set(all.begin() + held, all.end());

  std::unique_ptr<TrainableModel> model;
  if (o.full) {
    model = TrainableModel::ForFullFineTune(*base, o.dtype);
  } else {
    auto config =
        PeftAdapterConfig::FromJson(PeftConfigJson(o.adapter), "the adapter being trained");
    if (!config.ok()) return config.status();
    ASSIGN_OR_RETURN(model,
                     TrainableModel::ForAdapter(*base, *config, o.dtype, o.seed, o.dora_norm));
  }
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));

  const int64_t per_step = o.batch_size * o.grad_accum;
  const int64_t steps_per_epoch =
      (static_cast<int64_t>(train_set.size()) + per_step - 1) / per_step;
  const int64_t total = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
  const int64_t epochs = (total + steps_per_epoch - 1) / steps_per_epoch;
  const int64_t warmup = o.warmup_steps >= 0
                             ? o.warmup_steps
                             : static_cast<int64_t>(std::ceil(o.warmup_ratio * total));
  const int64_t log_every = o.log_every > 0 ? o.log_every : std::max<int64_t>(1, total / 20);

  TrainResult result;
  result.trainable_parameters = model->num_parameters();
  result.optimizer_state_bytes = OptimizerStateBytes(*model);
  Checkpointer checkpointer(o);
  int64_t start = 0;
  if (o.resume) {
    ASSIGN_OR_RETURN(
        start, checkpointer.Restore(*model, optimizer, result.eval_losses, result.final_loss));
    if (start > 0) out << "resuming at step " << start << " from " << o.out << "/checkpoint\n";
  }
  out << absl::StrFormat(
      "training %s: %d trainable parameters, %d examples (%d held out), %d steps of %d x %d "
      "examples\n",
      o.full ? "every weight" : absl::StrCat(model->modules().size(), " adapted modules"),
      result.trainable_parameters, examples.size(), eval_set.size(), total, o.batch_size,
      o.grad_accum);

  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  int64_t tokens_done = 0;
  double seconds = 0;
  absl::Status diverged;
  absl::Status status = CatchTorch("training", [&] {
    for (int64_t step = start; step < total; ++step) {
      const auto began = Clock::now();
      const int64_t epoch = step / steps_per_epoch, within = step % steps_per_epoch;
      if (epoch != order_epoch) {
        order = train_set;
        std::mt19937_64 rng(o.seed ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(epoch + 1)));
        std::shuffle(order.begin(), order.end(), rng);
        order_epoch = epoch;
      }
      const size_t first = static_cast<size_t>(within * per_step);
      const size_t last = std::min(order.size(), first + static_cast<size_t>(per_step));
      int64_t completion = 0;
      for (size_t i = first; i < last; ++i)
        completion += examples[order[i]].tokens.size() - examples[order[i]].prompt_length;
      const double lr = ScheduledLr(o.lr, step, warmup, total);
      for (auto& group : optimizer.param_groups())
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      optimizer.zero_grad();
      double loss_sum = 0;
      for (size_t i = first; i < last; i += o.batch_size) {
        const Batch b =
            MakeBatch(examples, order, i, std::min(last, i + static_cast<size_t>(o.batch_size)));
        auto [loss, n] = CompletionLoss(model->Forward(b.tokens), b.tokens, b.loss_mask);
        (loss / static_cast<double>(completion)).backward();
        loss_sum += loss.item<double>();
        tokens_done += b.num_tokens;
      }
      if (o.max_grad_norm > 0)
        torch::nn::utils::clip_grad_norm_(model->parameters(), o.max_grad_norm);
      optimizer.step();
      result.final_loss = loss_sum / static_cast<double>(completion);
      if (!std::isfinite(result.final_loss)) {
        diverged = absl::FailedPreconditionError(absl::StrFormat(
            "the training loss became %f at step %d; lower --lr (now %g) or --max_grad_norm",
            result.final_loss, step + 1, o.lr));
        return;
      }
      seconds += std::chrono::duration<double>(Clock::now() - began).count();
      const int64_t done = step + 1 - start;
      const double eta =
          seconds / static_cast<double>(done) * static_cast<double>(total - step - 1);
      const double tok_s = static_cast<double>(tokens_done) / std::max(seconds, 1e-9);
      if (o.live_progress || done % log_every == 0 || step + 1 == total) {
        const int filled = static_cast<int>(20 * (step + 1) / total);
        out << (o.live_progress ? "\r" : "")
            << absl::StrFormat("step %d/%d [%s%s] loss %.4f lr %.2e %.0f tok/s ETA %s", step + 1,
                               total, std::string(filled, '#'), std::string(20 - filled, '.'),
                               result.final_loss, lr, tok_s, Duration(eta))
            << (o.live_progress ? "" : "\n") << std::flush;
      }
      const bool epoch_end = within + 1 == steps_per_epoch || step + 1 == total;
      if (epoch_end) {
        if (o.live_progress) out << "\n";
        if (!eval_set.empty()) {
          result.eval_losses.push_back(EvalLoss(*model, examples, eval_set, o.batch_size));
          out << absl::StrFormat("epoch %d/%d: held-out loss %.4f (%d examples)\n", epoch + 1,
                                 epochs, result.eval_losses.back(), eval_set.size());
        }
      }
      const bool stop = o.stop_after > 0 && step + 1 - start >= o.stop_after && step + 1 < total;
      if (epoch_end || stop || (o.save_steps > 0 && (step + 1) % o.save_steps == 0)) {
        absl::Status saved =
            checkpointer.Save(*model, optimizer, step + 1, result.eval_losses, result.final_loss);
        TORCH_CHECK(saved.ok(), std::string(saved.message()));
      }
      result.steps = step + 1;
      if (stop) {
        result.stopped_early = true;
        break;
      }
    }
  });
  RETURN_IF_ERROR(status);
  RETURN_IF_ERROR(diverged);
  if (start >= total) result.steps = total;
  if (result.stopped_early) {
    out << "stopped after step " << result.steps << " of " << total << "; continue with --resume\n";
    result.tokens_per_second = static_cast<double>(tokens_done) / std::max(seconds, 1e-9);
    return result;
  }
  result.tokens_per_second = static_cast<double>(tokens_done) / std::max(seconds, 1e-9);
  RETURN_IF_ERROR(WriteOutput(o, *model, *base));
  return result;
}

}  // namespace loramux
