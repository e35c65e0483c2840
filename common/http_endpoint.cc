#include "common/http_endpoint.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loramux {

namespace {

// Methods a route may name; a catch-all handler for each sends requests to our dispatcher.
constexpr const char* kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

std::chrono::microseconds ToMicros(absl::Duration d) {
  return std::chrono::microseconds(absl::ToInt64Microseconds(d));
}

}  // namespace

class HttpEndpoint::Impl {
 public:
  Impl(std::vector<HttpRoute> routes, const HttpEndpointOptions& options)
      : routes_(std::move(routes)) {
    const size_t threads = static_cast<size_t>(std::max(1, options.threads));
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_read_timeout(ToMicros(options.read_timeout));
    server_.set_write_timeout(ToMicros(options.write_timeout));
    server_.set_keep_alive_timeout(
        std::max<time_t>(1, static_cast<time_t>(absl::ToInt64Seconds(options.keep_alive_timeout))));
    server_.set_keep_alive_max_count(static_cast<size_t>(std::max(1, options.keep_alive_max_requests)));
    server_.set_payload_max_length(options.max_body_bytes);
    auto dispatch = [this](const httplib::Request& in, httplib::Response& out) {
      Dispatch(in, out);
    };
    server_.Get(".*", dispatch);
    server_.Post(".*", dispatch);
    server_.Put(".*", dispatch);
    server_.Patch(".*", dispatch);
    server_.Delete(".*", dispatch);
    server_.Options(".*", dispatch);
  }

  ~Impl() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Binds (port 0: any free port); returns the port, or -1.
  int Bind(const std::string& host, int port) {
    if (port == 0) return server_.bind_to_any_port(host);
    return server_.bind_to_port(host, port) ? port : -1;
  }

  // Serves on a thread of its own until destruction. Returns once the accept loop runs, so that
  // the destructor's stop() cannot come before it (it would then be lost).
  void Start() {
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 5000 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  void Dispatch(const httplib::Request& in, httplib::Response& out) const {
    const std::string method = in.method == "HEAD" ? "GET" : in.method;
    const HttpRoute* found = nullptr;
    std::set<std::string> allowed;
    for (const HttpRoute& route : routes_) {
      if (route.path != in.path) continue;
      allowed.insert(route.method);
      if (route.method == method) found = &route;
    }
    HttpResponse response;
    if (found != nullptr) {
      HttpRequest request;
      request.method = in.method;
      request.path = in.path;
      request.headers.insert(in.headers.begin(), in.headers.end());
      request.body = in.body;
      response = found->handler(request);
    } else if (!allowed.empty()) {
      response.status = 405;
      response.body = absl::StrCat(in.path, " answers ", absl::StrJoin(allowed, ", "), "\n");
      out.set_header("Allow", absl::StrJoin(allowed, ", "));
    } else {
      std::set<std::string> paths;
      for (const HttpRoute& route : routes_) paths.insert(route.path);
      response.status = 404;
      response.body = absl::StrCat(in.path, " is not served here; try ",
                                   absl::StrJoin(paths, " or "), "\n");
    }
    out.status = response.status;
    out.set_content(response.body, response.content_type.c_str());
  }

  const std::vector<HttpRoute> routes_;
  httplib::Server server_;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Listen(const std::string& host_port,
                                                                   const std::string& flag,
                                                                   std::vector<HttpRoute> routes,
                                                                   HttpEndpointOptions options) {
  const size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(host_port).substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", host_port, ": expected HOST:PORT such as 127.0.0.1:9090 (port 0 picks a free ",
        "port)"));
  }
  const std::string shown_host = host_port.substr(0, colon);
  std::string host = shown_host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  for (const HttpRoute& route : routes) {
    if (std::find(std::begin(kMethods), std::end(kMethods), route.method) == std::end(kMethods)) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP route ", route.path, ": method ", route.method, " is not served"));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(routes), options);
  const int bound = impl->Bind(host, port);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat(
        flag, "=", host_port, ": cannot listen there; is the port in use or the host not an ",
        "address of this machine? pick another, or port 0 for any free port"));
  }
  impl->Start();
  return std::unique_ptr<HttpEndpoint>(
      new HttpEndpoint(std::move(impl), absl::StrCat(shown_host, ":", bound)));
}

HttpEndpoint::HttpEndpoint(std::unique_ptr<Impl> impl, std::string address)
    : impl_(std::move(impl)), address_(std::move(address)) {}

HttpEndpoint::~HttpEndpoint() = default;

}  // namespace loramux
