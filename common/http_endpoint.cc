#include "common/http_endpoint.h"

#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
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

// OpenSSL objects from PEM text, freed by their deleters.
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

// An HTTPS server for the PEM certificate and key, or INVALID_ARGUMENT naming what is unreadable.
absl::StatusOr<std::unique_ptr<httplib::Server>> MakeTlsServer(const std::string& cert_pem,
                                                               const std::string& key_pem,
                                                               const std::string& flag) {
  std::unique_ptr<BIO, BioFree> cert_bio(
      BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  std::unique_ptr<BIO, BioFree> key_bio(
      BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr || key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": the TLS ",
                                                   cert == nullptr ? "certificate" : "private key",
                                                   " is not readable PEM"));
  }
  auto server =
      std::make_unique<httplib::SSLServer>(cert.get(), key.get());  // takes its own references
  if (!server->is_valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": the TLS certificate and private key do not make a valid context"));
  }
  return std::unique_ptr<httplib::Server>(std::move(server));
}

}  // namespace

const std::string* HttpRequest::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? nullptr : &it->second;
}

class HttpEndpoint::Impl {
 public:
  Impl(std::unique_ptr<httplib::Server> server, std::vector<HttpRoute> routes,
       const HttpEndpointOptions& options)
      : routes_(std::move(routes)), server_(std::move(server)) {
    const size_t threads = static_cast<size_t>(std::max(1, options.threads));
    server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_->set_read_timeout(ToMicros(options.read_timeout));
    server_->set_write_timeout(ToMicros(options.write_timeout));
    server_->set_keep_alive_timeout(
        std::max<time_t>(1, static_cast<time_t>(absl::ToInt64Seconds(options.keep_alive_timeout))));
    server_->set_keep_alive_max_count(
        static_cast<size_t>(std::max(1, options.keep_alive_max_requests)));
    server_->set_payload_max_length(options.max_body_bytes);
    // Streamed events are small writes: without this, Nagle's algorithm holds each one back until
    // the client's delayed ACK (tens of milliseconds per token).
    server_->set_tcp_nodelay(true);
    // Only SO_REUSEADDR (not SO_REUSEPORT: a second server on a taken port must fail), and the
    // listening socket is remembered so that Bind can widen cpp-httplib's backlog of 5.
    server_->set_socket_options([this](int fd) {
      const int yes = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      listen_fd_ = fd;
    });
    auto dispatch = [this](const httplib::Request& in, httplib::Response& out) {
      Dispatch(in, out);
    };
    server_->Get(".*", dispatch);
    server_->Post(".*", dispatch);
    server_->Put(".*", dispatch);
    server_->Patch(".*", dispatch);
    server_->Delete(".*", dispatch);
    server_->Options(".*", dispatch);
  }

  ~Impl() {
    server_->stop();
    if (thread_.joinable()) thread_.join();
  }

  // Binds (port 0: any free port); returns the port, or -1. The backlog then becomes SOMAXCONN
  // (listen() again on a listening socket updates it): with cpp-httplib's 5, a burst of clients
  // connecting at once overflowed the queue, and each dropped SYN cost its client a second.
  int Bind(const std::string& host, int port) {
    const int bound = port == 0                           ? server_->bind_to_any_port(host)
                      : server_->bind_to_port(host, port) ? port
                                                          : -1;
    if (bound > 0 && listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
    return bound;
  }

  // Serves on a thread of its own until destruction. Returns once the accept loop runs, so that
  // the destructor's stop() cannot come before it (it would then be lost).
  void Start() {
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    for (int i = 0; i < 5000 && !server_->is_running(); ++i) {
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
      for (const auto& [name, value] : in.headers) {
        request.headers.emplace(absl::AsciiStrToLower(name), value);
      }
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
      response.body =
          absl::StrCat(in.path, " is not served here; try ", absl::StrJoin(paths, " or "), "\n");
    }
    out.status = response.status;
    for (const auto& [name, value] : response.headers) out.set_header(name.c_str(), value);
    if (!response.stream) {
      out.set_content(response.body, response.content_type.c_str());
      return;
    }
    // The whole stream runs in the provider's first call; a failed write ends it.
    out.set_chunked_content_provider(response.content_type, [stream = std::move(response.stream)](
                                                                size_t, httplib::DataSink& sink) {
      bool ok = true;
      stream([&](const std::string& piece) {
        ok = ok && sink.write(piece.data(), piece.size());
        return ok;
      });
      if (ok) sink.done();
      return ok;
    });
  }

  const std::vector<HttpRoute> routes_;
  std::unique_ptr<httplib::Server> server_;
  int listen_fd_ = -1;  // owned by server_
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
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", host_port,
                     ": expected HOST:PORT such as 127.0.0.1:9090 (port 0 picks a free ", "port)"));
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
  std::unique_ptr<httplib::Server> server;
  if (!options.tls_cert_pem.empty() || !options.tls_key_pem.empty()) {
    absl::StatusOr<std::unique_ptr<httplib::Server>> tls =
        MakeTlsServer(options.tls_cert_pem, options.tls_key_pem, flag);
    if (!tls.ok()) return tls.status();
    server = *std::move(tls);
  } else {
    server = std::make_unique<httplib::Server>();
  }
  auto impl = std::make_unique<Impl>(std::move(server), std::move(routes), options);
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
