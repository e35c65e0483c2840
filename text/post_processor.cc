#include "text/post_processor.h"

#include "text/str_cat.h"
#include "common/status_macros.h"

namespace loramux::text {
namespace {

// TemplateProcessing's "single": [{"SpecialToken": {"id": name}}, {"Sequence": {"id": "A"}}, ...]
absl::Status ParseTemplate(JsonElement json, std::vector<int32_t>& prefix,
                           std::vector<int32_t>& suffix) {
  constexpr std::string_view kWhere = "post_processor TemplateProcessing";
  ASSIGN_OR_RETURN(simdjson::dom::array single, ArrayField(json, "single", kWhere));
  std::optional<JsonElement> specials = OptionalField(json, "special_tokens");
  bool seen_sequence = false;
  for (JsonElement item : single) {
    if (std::optional<JsonElement> sequence = OptionalField(item, "Sequence")) {
      ASSIGN_OR_RETURN(std::string_view id, StringField(*sequence, "id", kWhere));
      if (id != "A" || seen_sequence) {
        return JsonError(kWhere, "the \"single\" template must hold sequence A exactly once");
      }
      seen_sequence = true;
      continue;
    }
    std::optional<JsonElement> special = OptionalField(item, "SpecialToken");
    if (!special) return JsonError(kWhere, "template items are SpecialToken or Sequence");
    ASSIGN_OR_RETURN(std::string_view name, StringField(*special, "id", kWhere));
    std::optional<JsonElement> entry;
    if (specials) entry = OptionalField(*specials, name);
    if (!entry) {
      return JsonError(kWhere, Cat("special token \"", name,
                                            "\" is used but missing from special_tokens"));
    }
    ASSIGN_OR_RETURN(simdjson::dom::array ids, ArrayField(*entry, "ids", kWhere));
    for (JsonElement id : ids) {
      int64_t value = 0;
      if (id.get_int64().get(value) != simdjson::SUCCESS || value < 0 || value > INT32_MAX) {
        return JsonError(kWhere, Cat("ids of \"", name, "\" must be token ids"));
      }
      (seen_sequence ? suffix : prefix).push_back(static_cast<int32_t>(value));
    }
  }
  if (!seen_sequence) return JsonError(kWhere, "the \"single\" template lacks sequence A");
  return absl::OkStatus();
}

// RobertaProcessing / BertProcessing: "cls": [token, id], "sep": [token, id].
absl::StatusOr<int32_t> TokenPairId(JsonElement json, std::string_view key, std::string_view where) {
  ASSIGN_OR_RETURN(simdjson::dom::array pair, ArrayField(json, key, where));
  int64_t id = 0;
  if (pair.size() != 2 || pair.at(1).get_int64().get(id) != simdjson::SUCCESS || id < 0 ||
      id > INT32_MAX) {
    return JsonError(where, Cat("\"", key, "\" must be [token, id]"));
  }
  return static_cast<int32_t>(id);
}

}  // namespace

void PostProcessor::Apply(std::vector<int32_t>& ids) const {
  ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
}

absl::StatusOr<PostProcessor> PostProcessor::FromJson(JsonElement json) {
  ASSIGN_OR_RETURN(std::string_view type, ComponentType(json, "post_processor"));
  const std::string where = Cat("post_processor ", type);
  PostProcessor processor;
  if (type == "TemplateProcessing") {
    RETURN_IF_ERROR(ParseTemplate(json, processor.prefix_, processor.suffix_));
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    ASSIGN_OR_RETURN(int32_t cls, TokenPairId(json, "cls", where));
    ASSIGN_OR_RETURN(int32_t sep, TokenPairId(json, "sep", where));
    processor.prefix_ = {cls};
    processor.suffix_ = {sep};
  } else if (type == "ByteLevel") {
    // Only adjusts offsets, which loramux does not report.
  } else if (type == "Sequence") {
    ASSIGN_OR_RETURN(simdjson::dom::array items, ArrayField(json, "processors", where));
    for (JsonElement item : items) {
      ASSIGN_OR_RETURN(PostProcessor step, FromJson(item));
      // Each step wraps the result of the previous one.
      processor.prefix_.insert(processor.prefix_.begin(), step.prefix_.begin(), step.prefix_.end());
      processor.suffix_.insert(processor.suffix_.end(), step.suffix_.begin(), step.suffix_.end());
    }
  } else {
    return Unsupported(Cat("post_processor type \"", type, "\""),
                       "supported: TemplateProcessing, RobertaProcessing, BertProcessing, "
                       "ByteLevel, Sequence");
  }
  return processor;
}

}  // namespace loramux::text
