// A small HTTP/1.1 listener for the server's HTTP fronts (today /metrics; the OpenAI-compatible
// API is meant to serve through it too), on cpp-httplib from Debian (libcpp-httplib-dev).
//
// Robust against slow or hostile clients: connections are served by a fixed pool of threads, so
// one client trickling its request (or connecting and sending nothing) holds one thread, never
// the endpoint; every read and write on a connection has a timeout, keep-alive connections are
// closed when idle, and request bodies are bounded.
//
// A response is a whole body, or a stream written piece by piece (chunked transfer encoding; used
// for Server-Sent Events): each piece goes to the socket as it is written, and a write that fails
// (the client is gone) tells the stream to stop.
//
// Routes are fixed when the endpoint starts: an exact path and method each (the query string is
// not part of the path). HEAD is answered by the GET handler without the body. Another method on
// a known path is 405, an unknown path 404, each with a short text body saying what exists.
//
// Thread-safety: handlers run concurrently on the pool's threads and must be thread-safe.
// Listen and the destructor are for one controlling thread.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loramux {

struct HttpRequest {
  std::string method;                               // "GET", "POST", ...
  std::string path;                                 // without the query string
  std::multimap<std::string, std::string> headers;  // names in lower case
  std::string body;

  // The first value of header `name` (lower case), or nullptr.
  const std::string* Header(const std::string& name) const;
};

// Writes one piece of a streamed body; false once the client is gone (stop writing then).
using HttpWrite = std::function<bool(const std::string& piece)>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Retry-After
  // When set, the body is this stream instead of `body`: called once, on the connection's thread,
  // after the status and headers are sent; it returns when the body is complete or a write failed.
  std::function<void(const HttpWrite& write)> stream;
};

struct HttpRoute {
  std::string method;  // "GET", "POST", ...
  std::string path;    // exact, e.g. "/metrics"
  std::function<HttpResponse(const HttpRequest&)> handler;
};

struct HttpEndpointOptions {
  int threads = 4;  // connections served at once; more wait in the accept queue
  absl::Duration read_timeout = absl::Seconds(5);   // per read from a connection
  absl::Duration write_timeout = absl::Seconds(5);  // per write to a connection
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  int keep_alive_max_requests = 100;
  size_t max_body_bytes = 1 << 20;
  std::string tls_cert_pem;  // both set: HTTPS with this certificate chain and key
  std::string tls_key_pem;
};

class HttpEndpoint {
 public:
  // Listens on `host_port` ("127.0.0.1:9090", "[::]:0"; port 0 picks a free port) and serves
  // `routes`. `flag` names the setting in errors (e.g. "--metrics_listen"): INVALID_ARGUMENT for a
  // malformed address or unreadable TLS material, UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Listen(const std::string& host_port,
                                                              const std::string& flag,
                                                              std::vector<HttpRoute> routes,
                                                              HttpEndpointOptions options = {});
  // Stops accepting, lets the pool finish the connections it serves, joins its threads.
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // "host:port" as bound (the real port when port 0 was asked for).
  const std::string& address() const { return address_; }

 private:
  class Impl;  // keeps httplib.h out of this header
  explicit HttpEndpoint(std::unique_ptr<Impl> impl, std::string address);

  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace loramux
