#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <thread>
#include <unordered_set>

#include <torch/torch.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_weights.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/batch_planner.h"
#include "engine/logits_summary.h"
#include "engine/request_validator.h"
#include "engine/text_stream.h"
#include "model/kv_cache.h"
#include "model/llama_model.h"
#include "tensor/tensor_util.h"

namespace loramux {
namespace {

// One request inside the scheduler. Owned by the scheduler thread once admitted.
struct Sequence {
  uint64_t id = 0;
  InferenceRequest request;
  std::shared_ptr<RequestObserver> observer;
  std::optional<StoredAdapter> adapter;  // resolved at Submit; none = base model
  std::shared_ptr<const AdapterWeights> weights;
  bool leased = false;
  std::unique_ptr<Sampler> sampler;
  int64_t prefilled = 0;                  // prompt tokens already in the KV cache
  std::vector<int32_t> generated;         // tokens produced so far
  bool running = false;                   // holds KV blocks
  std::vector<torch::Tensor> score_rows;  // Score: logits of prefilled chunks
  absl::flat_hash_set<int32_t> stops;     // EOS and the request's stop ids: O(1) per token
  absl::Status failure;                   // set when this request's own computation failed
  std::unique_ptr<TextStream> text;       // generate with a tokenizer: the streamed text
  bool stopped_by_text = false;           // a stop string was found

  bool is_score() const { return request.kind == InferenceRequest::Kind::kScore; }
  int64_t prompt_len() const { return static_cast<int64_t>(request.tokens.size()); }
  // Tokens in the cache once the next step is done.
  int64_t context_len() const { return prefilled + static_cast<int64_t>(generated.size()); }
  std::string version() const { return adapter ? adapter->version : ""; }
};

}  // namespace

class Scheduler::Impl {
 public:
  Impl(const LlamaModel& model, AdapterRegistry& registry, SchedulerOptions options,
       const text::Tokenizer* tokenizer)
      : model_(model),
        registry_(registry),
        options_(options),
        tokenizer_(tokenizer),
        cache_(model.config(), options.kv_cache_bytes, model.device(), model.dtype()) {
    if (options_.max_prompt_tokens <= 0)
      options_.max_prompt_tokens = model.config().max_position_embeddings;
    limits_.vocab_size = model.config().vocab_size;
    limits_.max_prompt_tokens = options_.max_prompt_tokens;
    limits_.max_new_tokens_limit = options_.max_new_tokens_limit;
    limits_.default_max_new_tokens = options_.default_max_new_tokens;
    limits_.max_score_logits_bytes = options_.max_score_logits_bytes;
    limits_.has_tokenizer = tokenizer != nullptr;
    PublishCounts();
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() { Stop(); }

  absl::StatusOr<uint64_t> Submit(InferenceRequest request,
                                  std::shared_ptr<RequestObserver> observer) {
    RETURN_IF_ERROR(NormalizeAndValidate(request, limits_));
    auto seq = std::make_unique<Sequence>();
    if (!request.adapter.empty()) {
      absl::StatusOr<StoredAdapter> stored = registry_.Resolve(request.adapter);
      if (!stored.ok()) return stored.status();
      seq->adapter = *stored;
    }
    if (request.kind == InferenceRequest::Kind::kGenerate) {
      seq->sampler = std::make_unique<Sampler>(request.sampling);
      seq->stops.insert(request.stop_token_ids.begin(), request.stop_token_ids.end());
      if (!request.ignore_eos) {
        seq->stops.insert(model_.config().eos_token_ids.begin(),
                          model_.config().eos_token_ids.end());
      }
      if (tokenizer_) seq->text = std::make_unique<TextStream>(*tokenizer_, request.stop);
    }
    const int64_t need = KvTokensNeeded(request);
    if (need > cache_.capacity_tokens()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request needs ", need, " tokens of KV cache but the whole cache holds ",
          cache_.capacity_tokens(), "; lower max_new_tokens or raise --kv_cache_bytes"));
    }
    seq->request = std::move(request);
    seq->observer = std::move(observer);
    absl::MutexLock lock(&mu_);
    if (draining_ || stopped_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int64_t>(inbox_.size()) + waiting_count_ >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request queue is full (", options_.max_queue, " waiting); retry later"));
    }
    seq->id = next_id_++;
    const uint64_t id = seq->id;
    inbox_.push_back(std::move(seq));
    return id;
  }

  void Cancel(uint64_t id) {
    absl::MutexLock lock(&mu_);
    cancelled_.insert(id);
  }

  void StartDrain() {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }

  bool Idle() const {
    absl::MutexLock lock(&mu_);
    return inbox_.empty() && waiting_count_ == 0 && running_count_ == 0;
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  SchedulerStats stats() const {
    absl::MutexLock lock(&mu_);
    SchedulerStats s = stats_;
    s.queued = static_cast<int64_t>(inbox_.size()) + waiting_count_;
    s.running = running_count_;
    return s;
  }

  int64_t vocab_size() const { return model_.config().vocab_size; }
  int64_t max_context_tokens() const {
    return std::min<int64_t>(model_.config().max_position_embeddings, cache_.capacity_tokens());
  }

 private:
  int64_t KvTokensNeeded(const InferenceRequest& r) const {
    const int64_t prompt = static_cast<int64_t>(r.tokens.size());
    if (r.kind == InferenceRequest::Kind::kScore) return prompt;
    return std::min<int64_t>(prompt + r.sampling.max_new_tokens,
                             model_.config().max_position_embeddings);
  }

  // ---- the scheduler thread -------------------------------------------------------------------

  void Loop() {
    while (true) {
      std::vector<uint64_t> cancelled;
      {
        absl::MutexLock lock(&mu_);
        if (running_.empty()) {
          // Wake for new work, cancellations, adapter loads, and to check waiting deadlines.
          mu_.AwaitWithTimeout(absl::Condition(this, &Impl::HasNewsLocked),
                               absl::Milliseconds(waiting_.empty() ? 200 : 10));
        }
        if (adapter_ready_) loading_.clear();  // retry every adapter that was loading
        adapter_ready_ = false;
        if (stopped_) break;
        while (!inbox_.empty()) {
          waiting_.push_back(std::move(inbox_.front()));
          inbox_.pop_front();
        }
        cancelled.assign(cancelled_.begin(), cancelled_.end());
        cancelled_.clear();
      }
      ApplyCancellations(cancelled);
      ExpireDeadlines();
      Admit();
      Step();
      PublishCounts();
    }
    FailAll(absl::UnavailableError("the server is shutting down"));
  }

  void PublishCounts() {
    absl::MutexLock lock(&mu_);
    waiting_count_ = static_cast<int64_t>(waiting_.size());
    running_count_ = static_cast<int64_t>(running_.size());
    stats_.kv_used_blocks = cache_.used_blocks();
    stats_.kv_total_blocks = cache_.num_blocks();
    stats_.kv_block_tokens = cache_.block_size();
  }

  void Finish(std::unique_ptr<Sequence>& seq, const absl::Status& status, FinishReason reason) {
    if (seq->running) cache_.Release(static_cast<int64_t>(seq->id));
    if (seq->leased) registry_.Release({seq->adapter->name, seq->adapter->version});
    Usage usage;
    usage.prompt_tokens = static_cast<int32_t>(seq->prompt_len());
    usage.generated_tokens = static_cast<int32_t>(seq->generated.size());
    seq->observer->OnFinish(status, reason, usage, seq->version());
    seq.reset();
  }

  // Removes finished (null) sequences from a list.
  static void Compact(std::vector<std::unique_ptr<Sequence>>& list) {
    list.erase(std::remove(list.begin(), list.end(), nullptr), list.end());
  }

  void ApplyCancellations(const std::vector<uint64_t>& ids) {
    if (ids.empty()) return;
    const std::unordered_set<uint64_t> set(ids.begin(), ids.end());
    for (auto* list : {&waiting_, &running_}) {
      for (auto& seq : *list) {
        if (seq && set.count(seq->id)) Finish(seq, absl::OkStatus(), FinishReason::kCancelled);
      }
      Compact(*list);
    }
  }

  void ExpireDeadlines() {
    const absl::Time now = absl::Now();
    for (auto* list : {&waiting_, &running_}) {
      for (auto& seq : *list) {
        if (seq && seq->request.deadline < now) {
          Finish(seq, absl::DeadlineExceededError("the request's deadline passed"),
                 FinishReason::kCancelled);
        }
      }
      Compact(*list);
    }
  }

  void FailAll(const absl::Status& status) {
    for (auto* list : {&waiting_, &running_}) {
      for (auto& seq : *list) Finish(seq, status, FinishReason::kCancelled);
      list->clear();
    }
    std::deque<std::unique_ptr<Sequence>> inbox;
    {
      absl::MutexLock lock(&mu_);
      inbox.swap(inbox_);
    }
    for (auto& seq : inbox) Finish(seq, status, FinishReason::kCancelled);
  }

  // Moves waiting requests whose adapter is resident into the running set, in arrival order,
  // while running slots and KV blocks last. A cold adapter never blocks the others.
  void Admit() {
    for (auto& seq : waiting_) {
      if (static_cast<int64_t>(running_.size()) >= options_.max_running_requests) break;
      if (seq->adapter && !seq->leased) {
        const std::string key = AdapterKey{seq->adapter->name, seq->adapter->version}.id();
        if (loading_.count(key)) continue;  // asked already; wait for the loader's wake-up
        AdapterRegistry::Lease lease = registry_.Acquire(*seq->adapter, [this] {
          absl::MutexLock lock(&mu_);
          adapter_ready_ = true;
        });
        if (!lease.status.ok()) {
          Finish(seq, lease.status, FinishReason::kCancelled);
          continue;
        }
        if (!lease.weights) {  // loading; stays waiting
          loading_.insert(key);
          continue;
        }
        seq->weights = lease.weights;
        seq->leased = true;
        if (absl::Status s =
                CheckEffectiveScale(seq->weights->max_abs_scale(), seq->request.adapter_scale,
                                    DtypeMax(model_.dtype()));
            !s.ok()) {
          Finish(seq, s, FinishReason::kCancelled);
          continue;
        }
      }
      if (!cache_.Reserve(static_cast<int64_t>(seq->id), KvTokensNeeded(seq->request))) break;
      seq->running = true;
      running_.push_back(std::move(seq));
    }
    Compact(waiting_);
  }

  struct Planned {
    Sequence* seq;
    int64_t length;  // tokens in this step
    bool prefill;
  };

  // The next step's chunks (batch_planner.h): decode tokens, then prefill within the budget,
  // grouped by adapter.
  std::vector<Planned> PlanNextStep() const {
    std::vector<PlannerEntry> entries;
    entries.reserve(running_.size());
    for (const auto& seq : running_) {
      entries.push_back(
          {seq->prompt_len(), seq->prefilled, seq->weights.get(), seq->request.adapter_scale});
    }
    std::vector<Planned> plan;
    for (const PlannedChunk& c : PlanStep(entries, options_.max_batch_tokens)) {
      plan.push_back({running_[c.entry].get(), c.length, c.prefill});
    }
    return plan;
  }

  ForwardBatch BuildBatch(const std::vector<Planned>& plan) {
    ForwardBatch batch;
    for (const Planned& p : plan) {
      Sequence& s = *p.seq;
      SequenceChunk chunk;
      chunk.cache_id = static_cast<int64_t>(s.id);
      chunk.offset = static_cast<int64_t>(batch.token_ids.size());
      chunk.length = p.length;
      if (p.prefill) {
        chunk.start_pos = s.prefilled;
        chunk.all_logits = s.is_score();
        batch.token_ids.insert(batch.token_ids.end(), s.request.tokens.begin() + s.prefilled,
                               s.request.tokens.begin() + s.prefilled + p.length);
      } else {
        chunk.start_pos = s.context_len() - 1;
        batch.token_ids.push_back(s.generated.back());
      }
      batch.chunks.push_back(chunk);
      if (s.weights) {
        const int64_t end = chunk.offset + chunk.length;
        if (!batch.adapters.empty() && batch.adapters.back().adapter == s.weights.get() &&
            batch.adapters.back().scale == s.request.adapter_scale &&
            batch.adapters.back().end == chunk.offset &&
            batch.adapters.back().decode == !p.prefill) {
          batch.adapters.back().end = end;
        } else {
          batch.adapters.push_back(
              {s.weights.get(), s.request.adapter_scale, chunk.offset, end, !p.prefill});
        }
      }
    }
    return batch;
  }

  // Runs one forward pass over the planned chunks. A request whose computation fails (a LibTorch
  // error, or logits that are not finite) ends alone with its error; the others go on.
  void Step() {
    if (running_.empty()) return;
    const std::vector<Planned> plan = PlanNextStep();
    if (plan.empty()) return;
    int64_t generated = 0;
    absl::StatusOr<torch::Tensor> logits = model_.Forward(BuildBatch(plan), cache_);
    if (logits.ok()) {
      generated += Consume(plan, *logits);
    } else {
      // The batch failed as a whole; find the request(s) at fault by running each chunk alone.
      // Rewriting a chunk's KV slots with the same inputs is harmless.
      LogWarning("forward of %d chunks failed (%s); retrying them one by one", plan.size(),
                 logits.status().ToString());
      for (const Planned& p : plan) {
        absl::StatusOr<torch::Tensor> alone = model_.Forward(BuildBatch({p}), cache_);
        if (alone.ok()) {
          generated += Consume({p}, *alone);
        } else {
          p.seq->failure = alone.status();
        }
      }
    }
    for (auto& seq : running_) {
      if (!seq->failure.ok()) {
        Finish(seq, seq->failure, FinishReason::kCancelled);
        continue;
      }
      const auto reason = Done(*seq);
      if (reason) Finish(seq, seq->failure, *reason);  // failure: a Score whose maths failed
    }
    Compact(running_);
    absl::MutexLock lock(&mu_);
    ++stats_.steps;
    stats_.last_batch_tokens = 0;
    for (const Planned& p : plan) stats_.last_batch_tokens += p.length;
    stats_.last_batch_sequences = static_cast<int64_t>(plan.size());
    stats_.generated_tokens += generated;
  }

  // Hands each planned chunk its rows of `logits` (from a forward of exactly `plan`); returns the
  // tokens generated. A chunk whose rows are not all finite fails its request only.
  int64_t Consume(const std::vector<Planned>& plan, const torch::Tensor& logits) {
    // Each chunk's rows, and whether its last row picks a next token.
    struct ChunkRows {
      int64_t first, count;
      bool emits;
    };
    std::vector<ChunkRows> chunk_rows;
    std::vector<bool> summarize;
    for (const Planned& p : plan) {
      const int64_t count = p.prefill && p.seq->is_score() ? p.length : 1;
      const bool emits = EmitsToken(p);
      chunk_rows.push_back({static_cast<int64_t>(summarize.size()), count, emits});
      summarize.insert(summarize.end(), static_cast<size_t>(count - 1), false);
      summarize.push_back(emits);
    }
    torch::Tensor host;
    std::vector<LogitsRowSummary> rows;
    absl::Status copied = CatchTorch("reading logits", [&] {
      host = logits.to(torch::kCPU, torch::kFloat32).contiguous();
      rows = SummarizeLogitsRows(host.data_ptr<float>(), host.size(0), host.size(1), summarize);
    });
    if (!copied.ok()) {
      for (const Planned& p : plan) p.seq->failure = copied;
      return 0;
    }
    const int64_t vocab = host.size(1);
    int64_t generated = 0;
    for (size_t i = 0; i < plan.size(); ++i) {
      const Planned& p = plan[i];
      Sequence& s = *p.seq;
      const ChunkRows& r = chunk_rows[i];
      const bool ok = std::all_of(rows.begin() + r.first, rows.begin() + r.first + r.count,
                                  [](const LogitsRowSummary& row) { return row.finite; });
      if (!ok) {
        s.failure = NonFiniteError(s);
      } else if (s.is_score()) {
        s.score_rows.push_back(host.narrow(0, r.first, r.count));
      } else if (r.emits) {
        const LogitsRowSummary& row = rows[r.first];
        EmitToken(
            s, {host.data_ptr<float>() + r.first * vocab, vocab, row.argmax, row.log_normalizer});
        ++generated;
      }  // else: the last row of an unfinished prefill chunk is not needed
      if (p.prefill) s.prefilled += p.length;
    }
    return generated;
  }

  // Whether a planned chunk's (last) row picks the sequence's next token (a Score prefill yields
  // every position's row instead).
  static bool EmitsToken(const Planned& p) {
    const Sequence& s = *p.seq;
    return !s.is_score() && (!p.prefill || s.prefilled + p.length == s.prompt_len());
  }

  static absl::Status NonFiniteError(const Sequence& s) {
    if (!s.adapter)
      return absl::InternalError(
          "the base model's outputs for this request are not finite numbers");
    return absl::InvalidArgumentError(absl::StrCat(
        "the outputs for this request are not finite numbers (NaN or infinity): adapter \"",
        s.adapter->name, "\" at adapter_scale ", s.request.adapter_scale,
        " drives the activations out of the serving dtype's range; lower adapter_scale"));
  }

  static double DtypeMax(torch::ScalarType dtype) {
    switch (dtype) {
      case torch::kFloat16: return static_cast<double>(std::numeric_limits<c10::Half>::max());
      case torch::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
      case torch::kFloat64: return std::numeric_limits<double>::max();
      default: return std::numeric_limits<float>::max();
    }
  }

  void EmitToken(Sequence& s, const LogitsRow& row) {
    const SampledToken t = s.sampler->Sample(row);
    s.generated.push_back(t.token);
    std::vector<float> logprobs;
    if (s.request.logprobs) logprobs.push_back(t.logprob);
    if (s.request.top_logprobs > 0)
      s.observer->OnTopLogprobs(TopLogProbs(row, s.request.top_logprobs));
    TextStream::Piece piece;
    if (s.text) piece = s.text->Append(t.token);
    s.stopped_by_text = piece.stopped;
    s.observer->OnTokens({t.token}, logprobs, piece.text);
  }

  // Why `s` is finished after this step, if it is; Score results are delivered here.
  std::optional<FinishReason> Done(Sequence& s) {
    if (s.prefilled < s.prompt_len()) return std::nullopt;
    if (s.is_score()) {
      ScoreResult result;
      s.failure = CatchTorch("scoring", [&] { result = ScoreResultOf(s); });
      if (s.failure.ok()) s.observer->OnScore(std::move(result));
      return FinishReason::kLength;
    }
    std::optional<FinishReason> reason;
    if (s.stopped_by_text || s.stops.contains(s.generated.back())) {
      reason = FinishReason::kStop;
    } else if (static_cast<int32_t>(s.generated.size()) >= s.request.sampling.max_new_tokens ||
               s.context_len() >= model_.config().max_position_embeddings) {
      reason = FinishReason::kLength;
    }
    if (reason && s.text && !s.stopped_by_text) {
      const std::string rest = s.text->Finish();
      if (!rest.empty()) s.observer->OnTokens({}, {}, rest);
    }
    return reason;
  }

  ScoreResult ScoreResultOf(Sequence& s) {
    const torch::Tensor logits = torch::cat(s.score_rows, 0);  // [len, vocab] float32
    s.score_rows.clear();
    ScoreResult result;
    result.vocab_size = static_cast<int32_t>(logits.size(1));
    const int64_t len = logits.size(0);
    if (len > 1) {
      const torch::Tensor logp =
          torch::log_softmax(logits.narrow(0, 0, len - 1).to(torch::kFloat64), -1);
      std::vector<int64_t> next(s.request.tokens.begin() + 1, s.request.tokens.end());
      const torch::Tensor picked = logp.gather(1, torch::tensor(next).unsqueeze(1))
                                       .squeeze(1)
                                       .to(torch::kFloat32)
                                       .contiguous();
      result.token_logprobs.assign(picked.data_ptr<float>(),
                                   picked.data_ptr<float>() + picked.numel());
    }
    if (s.request.return_logits) {
      result.logits.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
    }
    return result;
  }

  const LlamaModel& model_;
  AdapterRegistry& registry_;
  SchedulerOptions options_;
  const text::Tokenizer* tokenizer_;  // may be null
  RequestLimits limits_;
  KvCache cache_;  // scheduler thread only

  // Scheduler-thread state.
  std::vector<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::unordered_set<std::string> loading_;  // adapter versions asked for and not yet resident

  // Shared with handlers (and the loader thread's wake-up). absl::Mutex re-checks the scheduler
  // thread's wait condition whenever it is released, so no notify is needed.
  bool HasNewsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopped_ || !inbox_.empty() || !cancelled_.empty() || adapter_ready_;
  }
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> inbox_ ABSL_GUARDED_BY(mu_);
  std::unordered_set<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  bool adapter_ready_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t waiting_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_count_ ABSL_GUARDED_BY(mu_) = 0;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

Scheduler::Scheduler(const LlamaModel& model, AdapterRegistry& registry, SchedulerOptions options,
                     const text::Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>(model, registry, options, tokenizer)) {}
Scheduler::~Scheduler() = default;

absl::StatusOr<uint64_t> Scheduler::Submit(InferenceRequest request,
                                           std::shared_ptr<RequestObserver> observer) {
  return impl_->Submit(std::move(request), std::move(observer));
}
void Scheduler::Cancel(uint64_t id) { impl_->Cancel(id); }
void Scheduler::StartDrain() { impl_->StartDrain(); }
bool Scheduler::Idle() const { return impl_->Idle(); }
void Scheduler::Stop() { impl_->Stop(); }
SchedulerStats Scheduler::stats() const { return impl_->stats(); }
int64_t Scheduler::vocab_size() const { return impl_->vocab_size(); }
int64_t Scheduler::max_context_tokens() const { return impl_->max_context_tokens(); }

}  // namespace loramux
