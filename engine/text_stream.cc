#include "engine/text_stream.h"

#include <algorithm>
#include <utility>

namespace loramux {

TextStream::TextStream(const text::Tokenizer& tokenizer, std::vector<std::string> stops)
    : decoder_(tokenizer, /*skip_special_tokens=*/true), stops_(std::move(stops)) {}

TextStream::Piece TextStream::Append(int32_t id) {
  if (stopped_) return {};
  absl::StatusOr<std::string> text = decoder_.Step(id);
  if (text.ok()) pending_ += *text;
  return Release();
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  if (absl::StatusOr<std::string> rest = decoder_.Finish(); rest.ok()) pending_ += *rest;
  Piece last = Release();  // a stop string may complete only with the flushed tail
  if (last.stopped) return last.text;
  last.text += pending_;
  pending_.clear();
  return last.text;
}

TextStream::Piece TextStream::Release() {
  // Every earlier piece was released only up to where no stop string could begin, so a stop
  // string lies wholly inside pending_ or not yet anywhere.
  size_t first_stop = std::string::npos;
  for (const std::string& stop : stops_) first_stop = std::min(first_stop, pending_.find(stop));
  if (first_stop != std::string::npos) {
    stopped_ = true;
    Piece piece{pending_.substr(0, first_stop), true};
    pending_.clear();
    return piece;
  }
  // Hold back the longest tail of pending_ that is a proper prefix of some stop string. Such a
  // tail starts where a stop string starts, at a character boundary, so the piece stays UTF-8.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  Piece piece{pending_.substr(0, pending_.size() - hold), false};
  pending_.erase(0, pending_.size() - hold);
  return piece;
}

}  // namespace loramux
