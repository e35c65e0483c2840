// Slow HTTP clients cannot stall /metrics (issue 12, finding 6): a connection that trickles its
// request one byte a second and one that connects and sends nothing are open while scrapes run;
// the scrapes are answered, and the port still serves after the slow clients have gone.
//
// Runs the real loramux_server on loopback. Every socket has a timeout and every loop a bound;
// scrapes use the harness's HttpGet (5 s socket timeouts), so a stalled endpoint fails the test
// instead of hanging it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

// A TCP connection to 127.0.0.1:port, or -1.
int ConnectTo(const std::string& host_port) {
  const int port = std::atoi(host_port.substr(host_port.rfind(':') + 1).c_str());
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends a request head one byte a second (a header that never ends) until stopped or the server
// closes the connection.
class Trickler {
 public:
  explicit Trickler(const std::string& host_port) : fd_(ConnectTo(host_port)) {
    thread_ = std::thread([this] {
      const std::string head = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
      for (size_t i = 0; !stop_ && fd_ >= 0 && i < 60; ++i) {
        const char byte = i < head.size() ? head[i] : 'a';
        if (send(fd_, &byte, 1, MSG_NOSIGNAL) != 1) break;
        ++sent_;
        for (int tick = 0; tick < 10 && !stop_; ++tick) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    });
  }
  ~Trickler() {
    stop_ = true;
    thread_.join();
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  int sent() const { return sent_; }

 private:
  const int fd_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::thread thread_;
};

TEST(MetricsHttpTest, SlowClientsDoNotDelayScrapes) {
  ServerProcess server({});
  ASSERT_TRUE(server.ok()) << server.Log();
  ASSERT_FALSE(server.metrics_address().empty()) << server.Log();
  const std::string& metrics = server.metrics_address();
  ASSERT_NE(HttpGet(metrics, "/metrics").find("loramux_queue_depth"), std::string::npos);

  {
    // The slow clients come first, so a one-at-a-time server would be busy with them.
    Trickler trickler(metrics);
    ASSERT_TRUE(trickler.connected());
    const int silent = ConnectTo(metrics);
    ASSERT_GE(silent, 0);
    for (int i = 0; i < 50 && trickler.sent() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_GE(trickler.sent(), 2);
    // Several scrapes while both are open (the trickler keeps going for the whole loop).
    for (int scrape = 0; scrape < 3; ++scrape) {
      const std::string page = HttpGet(metrics, "/metrics");
      EXPECT_NE(page.find("loramux_queue_depth"), std::string::npos)
          << "scrape " << scrape << " got no page while a slow client was connected";
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    EXPECT_GE(trickler.sent(), 3);  // it was still trickling during the scrapes
    close(silent);
  }
  // After the slow clients have gone, the port still serves; other paths answer 404.
  EXPECT_NE(HttpGet(metrics, "/metrics").find("loramux_queue_depth"), std::string::npos);
  EXPECT_NE(HttpGet(metrics, "/nothing-here").find("/metrics"), std::string::npos);
}

}  // namespace
}  // namespace loramux::testing
