// loramux_train: `train` fine-tunes a LoRA / DoRA adapter (or every weight) on a JSONL dataset;
// `merge` folds an adapter into a base checkpoint. The `loramux` CLI hands `loramux train ...`
// and `loramux merge ...` to this program (it links LibTorch; the CLI does not).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapters/module_table.h"
#include "common/durable_file.h"
#include "tensor/tensor_util.h"
#include "train/greedy_eval.h"
#include "train/merge.h"
#include "train/trainer.h"

ABSL_FLAG(std::string, model_dir, "",
          "base model: a HuggingFace directory (config.json, *.safetensors)");
ABSL_FLAG(std::string, data, "",
          "train: JSONL examples ({prompt, completion}, {messages} or token ids)");
ABSL_FLAG(std::string, out, "",
          "the directory to write (adapter, or checkpoint with --full / merge)");
ABSL_FLAG(int64_t, rank, 8, "train: LoRA rank r");
ABSL_FLAG(double, alpha, 16, "train: lora_alpha (scale alpha/r, or alpha/sqrt(r) with --rslora)");
ABSL_FLAG(bool, dora, false, "train: DoRA (a magnitude vector per adapted module)");
ABSL_FLAG(bool, rslora, false, "train: rank-stabilised scale alpha/sqrt(r)");
ABSL_FLAG(std::string, targets, "q_proj,v_proj",
          "train: module names (comma-separated) or all-linear");
ABSL_FLAG(std::string, target_regex, "",
          "train: target modules as a regex over module paths (full match)");
ABSL_FLAG(std::string, layers_to_transform, "",
          "train: comma-separated layer indices (default all)");
ABSL_FLAG(int64_t, epochs, 1, "train: passes over the training split");
ABSL_FLAG(int64_t, max_steps, 0, "train: stop after N optimizer steps (0: --epochs decide)");
ABSL_FLAG(double, lr, 2e-4, "train: peak learning rate (AdamW)");
ABSL_FLAG(int64_t, batch_size, 4, "train: examples per micro-batch");
ABSL_FLAG(int64_t, grad_accum, 1, "train: micro-batches per optimizer step");
ABSL_FLAG(double, weight_decay, 0.0, "train: AdamW weight decay");
ABSL_FLAG(double, warmup_ratio, 0.03, "train: warm-up steps as a fraction of all steps");
ABSL_FLAG(int64_t, warmup_steps, -1, "train: warm-up steps (overrides --warmup_ratio when >= 0)");
ABSL_FLAG(double, max_grad_norm, 1.0, "train: clip the global gradient norm (0: no clipping)");
ABSL_FLAG(uint64_t, seed, 0, "train: seed of initialisation, held-out split and data order");
ABSL_FLAG(double, eval_fraction, 0.1,
          "train: fraction of examples held out (loss printed each epoch)");
ABSL_FLAG(int64_t, max_seq_len, 0, "train: truncate examples to N tokens (0: the model's context)");
ABSL_FLAG(int64_t, save_steps, 0,
          "train: also checkpoint every N steps (always at each epoch's end)");
ABSL_FLAG(bool, resume, false, "train: continue from OUT/checkpoint when it exists");
ABSL_FLAG(int64_t, stop_after, 0,
          "train: checkpoint and stop after N more steps (continue with --resume)");
ABSL_FLAG(bool, full, false,
          "train: full fine-tuning of every weight (writes a checkpoint directory)");
ABSL_FLAG(std::string, dora_norm, "detached",
          "train: detached (PEFT's choice, the DoRA paper's sec. 4.3) or differentiable DoRA "
          "weight norm");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0: OMP_NUM_THREADS, else every CPU)");
ABSL_FLAG(std::string, upload, "",
          "train: upload the adapter under this name to --server afterwards");
ABSL_FLAG(std::string, server, "127.0.0.1:50051", "train --upload: the loramux server");
ABSL_FLAG(std::string, token_file, "",
          "train --upload: the admin token file, passed to `loramux upload`");
ABSL_FLAG(std::string, adapter, "", "merge: the adapter directory to fold into --model_dir");
ABSL_FLAG(std::string, dtype, "float32", "merge / --full: dtype of the written weights");

namespace loramux {
namespace {

constexpr char kUsage[] = R"(usage:
  loramux train --model_dir DIR --data FILE.jsonl --out DIR [--rank R] [--alpha A] [--dora] [--rslora]
                [--targets q_proj,v_proj|all-linear] [--epochs N] [--max_steps N] [--lr X]
                [--batch_size B] [--seed S] [--upload NAME --server HOST:PORT] [more: --helpfull]
  loramux merge --model_dir DIR --adapter ADAPTER_DIR --out DIR [--dtype float32|bfloat16|float16])";

int Fail(const absl::Status& status) {
  std::cerr << "loramux: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<std::vector<int64_t>> ParseLayers(const std::string& text) {
  std::vector<int64_t> layers;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t layer = 0;
    if (!absl::SimpleAtoi(piece, &layer) || layer < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--layers_to_transform: \"", piece, "\" is not a layer index"));
    }
    layers.push_back(layer);
  }
  return layers;
}

absl::StatusOr<TrainOptions> TrainOptionsFromFlags() {
  TrainOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model_dir);
  o.data = absl::GetFlag(FLAGS_data);
  o.out = absl::GetFlag(FLAGS_out);
  o.full = absl::GetFlag(FLAGS_full);
  o.adapter.rank = absl::GetFlag(FLAGS_rank);
  o.adapter.alpha = absl::GetFlag(FLAGS_alpha);
  o.adapter.use_dora = absl::GetFlag(FLAGS_dora);
  o.adapter.use_rslora = absl::GetFlag(FLAGS_rslora);
  o.adapter.target_regex = absl::GetFlag(FLAGS_target_regex);
  o.adapter.base_model_name_or_path = o.model_dir;
  const std::string targets = absl::GetFlag(FLAGS_targets);
  o.adapter.target_names.clear();
  if (targets == "all-linear") {
    o.adapter.target_names.assign(kProjectionNames.begin(), kProjectionNames.end());
  } else if (o.adapter.target_regex.empty()) {
    for (absl::string_view t : absl::StrSplit(targets, ',', absl::SkipEmpty()))
      o.adapter.target_names.emplace_back(t);
    if (o.adapter.target_names.empty())
      return absl::InvalidArgumentError("--targets is empty; name modules or all-linear");
  }
  auto layers = ParseLayers(absl::GetFlag(FLAGS_layers_to_transform));
  if (!layers.ok()) return layers.status();
  o.adapter.layers_to_transform = *layers;
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.max_steps = absl::GetFlag(FLAGS_max_steps);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.grad_accum = absl::GetFlag(FLAGS_grad_accum);
  o.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.warmup_ratio = absl::GetFlag(FLAGS_warmup_ratio);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.max_grad_norm = absl::GetFlag(FLAGS_max_grad_norm);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.eval_fraction = absl::GetFlag(FLAGS_eval_fraction);
  o.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  o.save_steps = absl::GetFlag(FLAGS_save_steps);
  o.resume = absl::GetFlag(FLAGS_resume);
  o.stop_after = absl::GetFlag(FLAGS_stop_after);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.live_progress = isatty(STDOUT_FILENO);
  const std::string norm = absl::GetFlag(FLAGS_dora_norm);
  if (norm != "detached" && norm != "differentiable") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dora_norm \"", norm, "\": use detached or differentiable"));
  }
  o.dora_norm = norm == "detached" ? DoraNorm::kDetached : DoraNorm::kDifferentiable;
  auto dtype = ParseScalarType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return dtype.status();
  o.save_dtype = *dtype;
  if (!absl::GetFlag(FLAGS_upload).empty() && o.full) {
    return absl::InvalidArgumentError("--upload sends an adapter; it cannot be used with --full");
  }
  return o;
}

// The `loramux` CLI beside this program (build/client/loramux next to build/train/loramux_train,
// or an installed pair in one directory).
std::string FindCli() {
  std::error_code error;
  const std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error).parent_path();
  for (const auto& candidate : {self / "loramux", self.parent_path() / "client" / "loramux"}) {
    if (std::filesystem::exists(candidate, error)) return candidate.string();
  }
  return "";
}

// Runs `loramux --server S upload NAME DIR`, whose output (the version) goes to our stdout.
absl::Status Upload(const std::string& name, const std::string& dir) {
  const std::string cli = FindCli();
  if (cli.empty())
    return absl::NotFoundError("cannot find the loramux CLI beside loramux_train to upload with");
  std::vector<std::string> args = {cli, "--server", absl::GetFlag(FLAGS_server)};
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    args.insert(args.end(), {"--token_file", absl::GetFlag(FLAGS_token_file)});
  }
  args.insert(args.end(), {"upload", name, dir});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout.flush();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    execv(cli.c_str(), argv.data());
    _exit(127);
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return absl::UnavailableError(
        absl::StrCat("the upload of \"", name, "\" to ", absl::GetFlag(FLAGS_server),
                     " failed (see above); the adapter is in ", dir,
                     ": retry with `loramux upload ", name, " ", dir, "`"));
  }
  return absl::OkStatus();
}

int RunTrain() {
  auto options = TrainOptionsFromFlags();
  if (!options.ok()) return Fail(options.status());
  auto result = Train(*options, std::cout);
  if (!result.ok()) return Fail(result.status());
  if (result->stopped_early) {
    std::cout << "loss: " << result->final_loss << "\n";
    return 0;
  }
  std::cout << "wrote " << (options->full ? "checkpoint" : "adapter") << " to " << options->out
            << " (" << result->trainable_parameters << " trainable parameters, " << result->steps
            << " steps)\n";
  if (const std::string name = absl::GetFlag(FLAGS_upload); !name.empty()) {
    if (absl::Status s = Upload(name, options->out); !s.ok()) return Fail(s);
  }
  std::cout << "loss: " << result->final_loss << "\n";
  return 0;
}

int RunMerge() {
  MergeOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model_dir);
  o.adapter_dir = absl::GetFlag(FLAGS_adapter);
  o.out = absl::GetFlag(FLAGS_out);
  auto dtype = ParseScalarType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return Fail(dtype.status());
  o.dtype = *dtype;
  if (absl::Status s = Merge(o); !s.ok()) return Fail(s);
  std::cout << "wrote the merged checkpoint to " << o.out << "\n";
  return 0;
}

}  // namespace
}  // namespace loramux

namespace loramux {
namespace {

// `evaluate`: greedy exact-match accuracy of --model_dir (plus --adapter when given) on --data.
int RunEvaluate() {
  const std::string dir = absl::GetFlag(FLAGS_model_dir), adapter = absl::GetFlag(FLAGS_adapter);
  ConfigureThreads(absl::GetFlag(FLAGS_threads));
  auto base = LlamaModel::Load(dir, torch::kCPU, torch::kFloat32);
  if (!base.ok()) return Fail(base.status());
  auto codec = TextCodec::Load(dir);
  if (!codec.ok()) return Fail(codec.status());
  auto examples = ReadTrainData(absl::GetFlag(FLAGS_data), (*base)->config(), **codec,
                                (*base)->config().max_position_embeddings);
  if (!examples.ok()) return Fail(examples.status());
  std::unique_ptr<TrainableModel> model;
  if (adapter.empty()) {
    model = TrainableModel::ForFullFineTune(**base, torch::kFloat32);
  } else {
    auto text = ReadSmallFile(adapter + "/adapter_config.json", 16 << 20);
    if (!text.ok()) return Fail(text.status());
    auto config = PeftAdapterConfig::FromJson(*text, adapter);
    if (!config.ok()) return Fail(config.status());
    auto adapted = TrainableModel::ForAdapter(**base, *config, torch::kFloat32, 0);
    if (!adapted.ok()) return Fail(adapted.status());
    model = std::move(*adapted);
    auto file = SafetensorsFile::Open(adapter + "/adapter_model.safetensors");
    if (!file.ok()) return Fail(file.status());
    if (absl::Status s = model->LoadTensors(**file); !s.ok()) return Fail(s);
  }
  const GreedyEval eval = EvaluateGreedy(*model, *examples, (*base)->config().eos_token_ids);
  std::cout << "exact: " << eval.correct << "/" << eval.total << "\n";
  return 0;
}

// `init`: a checkpoint of random weights (normal(0, 0.02) as HuggingFace initialises, unit
// norms) for --model_dir's config.json, written to --out with its tokenizer files: the start of a
// base pretrained with `train --full` (the demo's).
int RunInit() {
  const std::string dir = absl::GetFlag(FLAGS_model_dir), out = absl::GetFlag(FLAGS_out);
  if (dir.empty() || out.empty())
    return Fail(absl::InvalidArgumentError("init needs --model_dir (with config.json) and --out"));
  auto config = ModelConfig::FromDirectory(dir);
  if (!config.ok()) return Fail(config.status());
  auto base = LlamaModel::Random(*config, torch::kCPU, torch::kFloat32, absl::GetFlag(FLAGS_seed));
  auto model = TrainableModel::ForFullFineTune(*base, torch::kFloat32);
  if (absl::Status s = WriteCheckpointDirectory(out, dir, model->NamedTensors(), torch::kFloat32);
      !s.ok())
    return Fail(s);
  std::cout << "wrote random weights to " << out << "\n";
  return 0;
}

}  // namespace
}  // namespace loramux

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(loramux::kUsage);
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const std::string command = positional.size() == 2 ? positional[1] : "";
  if (command == "train") return loramux::RunTrain();
  if (command == "merge") return loramux::RunMerge();
  if (command == "init") return loramux::RunInit();
  if (command == "evaluate") return loramux::RunEvaluate();
  std::cerr << loramux::kUsage << "\n";
  return 2;
}
