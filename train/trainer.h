// The training loop: AdamW on the trainable parameters only (the adapter's A, B and DoRA's m, or
// every weight for full fine-tuning), linear warm-up then cosine decay to zero, gradient
// clipping by global norm, gradient accumulation, a held-out split evaluated at the end of every
// epoch, a progress line (loss, learning rate, tokens/s, ETA), and a resumable checkpoint in
// OUT/checkpoint. Deterministic given the seed: initialisation, the held-out split and each
// epoch's order derive from it, and no step is random otherwise, so a resumed run ends with the
// same weights as an uninterrupted one (same thread count).
//
// Thread-safety: one Train call at a time per process (it sets LibTorch's thread count).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "train/peft_export.h"
#include "train/trainable_model.h"

namespace loramux {

struct TrainOptions {
  std::string model_dir;  // HuggingFace base directory
  std::string data;       // JSONL (train_data.h)
  std::string out;        // the adapter directory (or a checkpoint directory with full)
  AdapterSpec adapter;
  bool full = false;  // full fine-tuning instead of an adapter (benchmarks, the demo's base)
  int64_t epochs = 1;
  int64_t max_steps = 0;   // > 0: stop after this many optimizer steps (epochs repeat as needed)
  int64_t batch_size = 4;  // examples per micro-batch
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  double lr = 2e-4;
  double weight_decay = 0.0;
  double warmup_ratio = 0.03;  // of all steps, unless warmup_steps >= 0
  int64_t warmup_steps = -1;
  double max_grad_norm = 1.0;  // 0 disables clipping
  uint64_t seed = 0;
  double eval_fraction = 0.1;  // held out; at least one example when > 0 and the data has two
  int64_t max_seq_len = 0;     // 0: the model's max_position_embeddings
  int64_t save_steps = 0;      // > 0: checkpoint every N steps (always at each epoch's end)
  bool resume = false;         // continue from OUT/checkpoint when it exists
  int64_t stop_after = 0;      // > 0: checkpoint and stop after this many steps of the schedule,
                               // without writing OUT (a time-boxed session; --resume continues)
  DoraNorm dora_norm = DoraNorm::kDetached;
  torch::ScalarType dtype = torch::kFloat32;       // of the trainable parameters and the forward
  torch::ScalarType save_dtype = torch::kFloat32;  // of the checkpoint written with `full`
  int threads = 0;                                 // 0: every CPU
  int64_t log_every = 0;       // steps between progress lines; 0: about 20 per run
  bool live_progress = false;  // redraw one progress line in place (a terminal) instead
};

struct TrainResult {
  double final_loss = 0;            // the last optimizer step's mean completion-token loss
  std::vector<double> eval_losses;  // per epoch (empty without a held-out split)
  int64_t steps = 0;                // steps done of the schedule
  bool stopped_early = false;       // stop_after ended the run; OUT holds only the checkpoint
  int64_t trainable_parameters = 0;
  int64_t optimizer_state_bytes = 0;  // AdamW's two moments over the trainable parameters
  double tokens_per_second = 0;  // tokens forwarded (prompt and completion) per second of training
};

// Trains and writes options.out. INVALID_ARGUMENT for bad options or data (naming them),
// NOT_FOUND for a missing model or data file, FAILED_PRECONDITION for a checkpoint of another run
// or a loss that became NaN or infinite (naming the step and --lr);
// INTERNAL when LibTorch fails. Progress goes to `progress`.
absl::StatusOr<TrainResult> Train(const TrainOptions& options, std::ostream& progress);

// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over `warmup`
// steps ((step+1)/warmup of `lr`), then cosine decay from `lr` to 0 at the last step.
double ScheduledLr(double lr, int64_t step, int64_t warmup, int64_t total);

}  // namespace loramux
