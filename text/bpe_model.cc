#include "text/bpe_model.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "text/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

constexpr std::string_view kWhere = "model BPE";

// A symbol of the word being merged; a doubly linked list over the initial characters.
struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

// A candidate merge of symbols[pos] with its successor; lowest rank first, then leftmost.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

absl::StatusOr<std::pair<std::string_view, std::string_view>> MergePair(JsonElement merge,
                                                                        size_t index) {
  std::string_view line;
  if (merge.get_string().get(line) == simdjson::SUCCESS) {
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      return JsonError(kWhere, Cat("merge ", index, " \"", line,
                                            "\" must be two tokens separated by one space"));
    }
    return std::make_pair(line.substr(0, space), line.substr(space + 1));
  }
  simdjson::dom::array pair;
  std::string_view left, right;
  if (merge.get_array().get(pair) != simdjson::SUCCESS || pair.size() != 2 ||
      pair.at(0).get_string().get(left) != simdjson::SUCCESS ||
      pair.at(1).get_string().get(right) != simdjson::SUCCESS) {
    return JsonError(kWhere, Cat("merge ", index,
                                          " must be \"a b\" or [\"a\", \"b\"]"));
  }
  return std::make_pair(left, right);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(JsonElement json) {
  if (!json.is_object()) return JsonError("model", "must be an object");
  // Files written by old versions of tokenizers may omit the type of a BPE model.
  std::string_view type = "BPE";
  if (OptionalField(json, "type")) {
    ASSIGN_OR_RETURN(type, ComponentType(json, "model"));
  }
  if (type != "BPE") {
    return Unsupported(Cat("model type \"", type, "\""), "only BPE is implemented");
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  if (std::optional<JsonElement> dropout = OptionalField(json, "dropout")) {
    double p = 0;
    if (dropout->get_double().get(p) != simdjson::SUCCESS || p != 0.0) {
      return Unsupported("model BPE with dropout",
                         "dropout makes encoding random; set it to null for inference");
    }
  }
  ASSIGN_OR_RETURN(model->byte_fallback_, BoolField(json, "byte_fallback", kWhere, false));
  ASSIGN_OR_RETURN(model->fuse_unk_, BoolField(json, "fuse_unk", kWhere, false));
  ASSIGN_OR_RETURN(model->ignore_merges_, BoolField(json, "ignore_merges", kWhere, false));
  ASSIGN_OR_RETURN(auto prefix, OptionalStringField(json, "continuing_subword_prefix", kWhere));
  ASSIGN_OR_RETURN(auto suffix, OptionalStringField(json, "end_of_word_suffix", kWhere));
  model->continuing_subword_prefix_ = std::string(prefix.value_or(""));
  model->end_of_word_suffix_ = std::string(suffix.value_or(""));

  // Vocabulary.
  std::optional<JsonElement> vocab_json = OptionalField(json, "vocab");
  simdjson::dom::object vocab;
  if (!vocab_json || vocab_json->get_object().get(vocab) != simdjson::SUCCESS) {
    return JsonError(kWhere, "field \"vocab\" must be an object {token: id}");
  }
  model->vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto field : vocab) {
    int64_t id = 0;
    if (field.value.get_int64().get(id) != simdjson::SUCCESS || id < 0 || id > INT32_MAX) {
      return JsonError(kWhere, Cat("vocab entry \"", field.key,
                                            "\" must map to a non-negative integer id"));
    }
    model->vocab_[std::string(field.key)] = static_cast<int32_t>(id);
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(max_id + 1);
  model->has_token_.resize(max_id + 1);
  model->bmp_char_ids_.assign(0x10000, -1);
  for (const auto& [token, id] : model->vocab_) {
    model->id_to_token_[id] = token;
    model->has_token_[id] = true;
    if (!token.empty() && Utf8CharLength(static_cast<unsigned char>(token[0])) == token.size()) {
      size_t pos = 0;
      const char32_t cp = NextCodePoint(token, pos);
      if (cp < 0x10000) {
        model->bmp_char_ids_[cp] = id;
      } else {
        model->astral_char_ids_[cp] = id;
      }
    }
  }

  ASSIGN_OR_RETURN(std::optional<std::string_view> unk, OptionalStringField(json, "unk_token", kWhere));
  if (unk) {
    std::optional<int32_t> unk_id = model->TokenToId(*unk);
    if (!unk_id) {
      return JsonError(kWhere, Cat("unk_token \"", *unk, "\" is not in the vocabulary"));
    }
    model->unk_id_ = unk_id;
  }
  for (int b = 0; b < 256; ++b) {
    std::optional<int32_t> id = model->TokenToId(absl::StrFormat("<0x%02X>", b));
    model->byte_fallback_ids_[b] = id.value_or(-1);
  }

  // Merges: rank = position in the list.
  ASSIGN_OR_RETURN(simdjson::dom::array merges, ArrayField(json, "merges", kWhere));
  model->merges_.reserve(merges.size());
  const size_t prefix_len = model->continuing_subword_prefix_.size();
  std::string merged;
  size_t rank = 0;
  for (JsonElement merge : merges) {
    ASSIGN_OR_RETURN(auto pair, MergePair(merge, rank));
    const auto [left, right] = pair;
    std::optional<int32_t> left_id = model->TokenToId(left), right_id = model->TokenToId(right);
    if (!left_id || !right_id || right.size() < prefix_len) {
      return JsonError(kWhere, Cat("merge ", rank, " \"", left, " ", right,
                                            "\" uses a token that is not in the vocabulary"));
    }
    merged.assign(left);
    merged.append(right.substr(prefix_len));
    std::optional<int32_t> new_id = model->TokenToId(merged);
    if (!new_id) {
      return JsonError(kWhere, Cat("merge ", rank, " \"", left, " ", right, "\" makes \"",
                                            merged, "\", which is not in the vocabulary"));
    }
    model->merges_[PairKey(*left_id, *right_id)] = {static_cast<int32_t>(rank), *new_id};
    ++rank;
  }
  return model;
}

int32_t BpeModel::CharId(char32_t cp) const {
  if (cp < 0x10000) return bmp_char_ids_[cp];
  auto it = astral_char_ids_.find(cp);
  return it == astral_char_ids_.end() ? -1 : it->second;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AsAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !has_token_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::InitialSymbols(std::string_view piece, std::vector<int32_t>& symbols) const {
  std::optional<int32_t> pending_unk;  // an unk not yet emitted (fused with following unknowns)
  std::string decorated;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t start = pos;
    pos += Utf8CharLength(static_cast<unsigned char>(piece[pos]));
    std::string_view ch = piece.substr(start, pos - start);
    std::string_view lookup = ch;
    const bool decorated_char = (start != 0 && !continuing_subword_prefix_.empty()) ||
                                (pos == piece.size() && !end_of_word_suffix_.empty());
    if (!decorated_char) {
      size_t cursor = start;
      const int32_t id = CharId(NextCodePoint(piece, cursor));
      if (id >= 0) {
        if (pending_unk) symbols.push_back(*std::exchange(pending_unk, std::nullopt));
        symbols.push_back(id);
        continue;
      }
    } else {
      decorated.clear();
      if (start != 0) decorated += continuing_subword_prefix_;
      decorated += ch;
      if (pos == piece.size()) decorated += end_of_word_suffix_;
      lookup = decorated;
      if (auto it = vocab_.find(AsAbsl(lookup)); it != vocab_.end()) {
        if (pending_unk) symbols.push_back(*std::exchange(pending_unk, std::nullopt));
        symbols.push_back(it->second);
        continue;
      }
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : lookup) all_bytes &= byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_bytes) {
        // HuggingFace does not flush a pending unk before byte-fallback tokens.
        for (char c : lookup) symbols.push_back(byte_fallback_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) symbols.push_back(*pending_unk);
      pending_unk = unk_id_;
    }
    // Without an unk token the character is dropped, as HuggingFace does.
  }
  if (pending_unk) symbols.push_back(*pending_unk);
}

void BpeModel::MergeAll(std::vector<int32_t>& ids) const {
  if (ids.size() < 2) return;
  std::vector<Symbol> symbols(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    symbols[i] = {ids[i], static_cast<int32_t>(i) - 1,
                  i + 1 < ids.size() ? static_cast<int32_t>(i + 1) : -1, true};
  }
  std::vector<Candidate> heap;
  const auto push = [&](int32_t pos) {
    const Symbol& left = symbols[pos];
    if (left.next < 0) return;
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    // Stale when the pair at this position changed since the candidate was pushed.
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.live = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  ids.clear();
  for (const Symbol& s : symbols) {
    if (s.live) ids.push_back(s.id);
  }
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  // The cache is consulted first: most pieces (words) repeat, and a hit costs one lookup.
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  CacheShard& shard = cache_[absl::Hash<absl::string_view>{}(AsAbsl(piece)) % kCacheShards];
  if (cacheable) {
    absl::MutexLock lock(&shard.mu);
    if (auto it = shard.entries.find(AsAbsl(piece)); it != shard.entries.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word;
  auto whole = ignore_merges_ ? vocab_.find(AsAbsl(piece)) : vocab_.end();
  if (whole != vocab_.end()) {
    word.push_back(whole->second);
  } else {
    InitialSymbols(piece, word);
    MergeAll(word);
  }
  ids.insert(ids.end(), word.begin(), word.end());
  if (cacheable) {
    absl::MutexLock lock(&shard.mu);
    if (shard.entries.size() < kCacheEntriesPerShard) shard.entries.emplace(std::string(piece), std::move(word));
  }
}

}  // namespace loramux::text
