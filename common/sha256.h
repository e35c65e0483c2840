// Incremental SHA-256 (OpenSSL EVP underneath). Not thread-safe; one hasher per stream.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace loramux {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // Lower-case hex digest (64 chars). The hasher is spent afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Hex SHA-256 of a whole buffer.
std::string Sha256Hex(std::string_view bytes);

// True for 64 lower- or upper-case hex characters.
bool IsSha256Hex(std::string_view s);

}  // namespace loramux
