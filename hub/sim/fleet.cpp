// The Fleet's MQTT 3.1.1 client: just what a device needs (CONNECT with a
// last will, SUBSCRIBE, PUBLISH QoS 0/1 both ways with PUBACK, PINGREQ,
// DISCONNECT) over non-blocking sockets and OpenSSL, one file descriptor per
// connection. libmosquitto was the first choice, but it opens a socket pair
// per client (three descriptors per device) and this machine's hard limit is
// 20,000 descriptors per process.
#include "hub/sim/fleet.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <latch>
#include <mutex>
#include <random>

#include "shared/core/backoff.hpp"
#include "shared/core/log.hpp"

namespace outpost::hub::sim {

namespace {

constexpr int kTickMs = 20;
constexpr std::size_t kMaxPacketBytes = 2u << 20;  // desired documents are <= 1 MiB
constexpr std::size_t kReadChunk = 16u << 10;

// --- MQTT 3.1.1 encoding ----------------------------------------------------

void PutU16(std::string* out, std::size_t v) {
  out->push_back(static_cast<char>((v >> 8) & 0xff));
  out->push_back(static_cast<char>(v & 0xff));
}

void PutString(std::string* out, std::string_view s) {
  PutU16(out, s.size());
  out->append(s);
}

void PutHeader(std::string* out, unsigned char type_flags, std::size_t remaining) {
  out->push_back(static_cast<char>(type_flags));
  do {
    auto byte = static_cast<unsigned char>(remaining % 128);
    remaining /= 128;
    if (remaining > 0) byte |= 0x80;
    out->push_back(static_cast<char>(byte));
  } while (remaining > 0);
}

void EncodeConnect(std::string* out, const std::string& client_id, bool clean_session,
                   int keepalive, const std::optional<OutMessage>& will) {
  std::string body;
  PutString(&body, "MQTT");
  body.push_back(4);  // protocol level 3.1.1
  unsigned char flags = clean_session ? 0x02 : 0x00;
  if (will)
    flags = static_cast<unsigned char>(flags | 0x04 | (1 << 3) | (will->retained ? 0x20 : 0));
  body.push_back(static_cast<char>(flags));
  PutU16(&body, static_cast<std::size_t>(keepalive));
  PutString(&body, client_id);
  if (will) {
    PutString(&body, will->topic);
    PutString(&body, will->payload);
  }
  PutHeader(out, 0x10, body.size());
  out->append(body);
}

void EncodeSubscribe(std::string* out, std::uint16_t id, const std::vector<std::string>& filters) {
  std::string body;
  PutU16(&body, id);
  for (const auto& f : filters) {
    PutString(&body, f);
    body.push_back(1);  // QoS 1
  }
  PutHeader(out, 0x82, body.size());
  out->append(body);
}

void EncodePublish(std::string* out, std::uint16_t id, const OutMessage& m) {
  const std::size_t len = 2 + m.topic.size() + 2 + m.payload.size();
  PutHeader(out, static_cast<unsigned char>(0x30 | (1 << 1) | (m.retained ? 1 : 0)), len);
  PutString(out, m.topic);
  PutU16(out, id);
  out->append(m.payload);
}

void EncodeAck(std::string* out, unsigned char type, std::uint16_t id) {
  PutHeader(out, type, 2);
  PutU16(out, id);
}

}  // namespace

enum class Phase {
  kIdle,     // not started yet
  kBackoff,  // waiting to (re)connect
  kTcp,      // TCP connect under way
  kTls,      // TLS handshake under way
  kConnack,  // CONNECT sent
  kSuback,   // SUBSCRIBE sent
  kUp,       // subscriptions in place, the Endpoint knows
  kClosing,  // DISCONNECT queued; closed once written
  kStopped,  // done, never reconnects
};

struct Fleet::Member {
  Endpoint* endpoint = nullptr;
  const TlsIdentity* identity = nullptr;
  Worker* worker = nullptr;
  Phase phase = Phase::kIdle;
  bool ever_up = false;
  int fd = -1;
  SSL* ssl = nullptr;
  std::uint32_t interest = 0;
  bool want_write = false;  // TLS wants the socket writable
  std::string rbuf;
  std::string wbuf;
  std::size_t woff = 0;
  std::uint16_t next_id = 1;
  std::int64_t attempt_at_ms = 0;  // kBackoff: when to try; connecting: when it started
  std::int64_t last_tx_ms = 0;
  std::int64_t last_rx_ms = 0;
  std::int64_t closing_since_ms = 0;
  Backoff backoff{std::chrono::milliseconds(500), std::chrono::milliseconds(30000), 0.5};
  std::vector<std::string> subscriptions;
  std::optional<OutMessage> will;

  std::uint16_t NextId() {
    std::uint16_t id = next_id++;
    if (next_id == 0) next_id = 1;
    return id;
  }
};

struct Fleet::Worker {
  Fleet* fleet = nullptr;
  int epfd = -1;
  int wakefd = -1;
  std::vector<std::unique_ptr<Member>> members;
  std::thread thread;
  std::mt19937_64 rng{std::random_device{}()};
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> up{0};
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> losses{0};
  std::atomic<std::uint64_t> failures{0};
  std::size_t connecting = 0;
  std::mutex mu;
  std::vector<std::function<void()>> commands;  // guarded by mu
  std::string chunk = std::string(kReadChunk, '\0');

  ~Worker() {
    for (auto& m : members) {
      if (m->ssl != nullptr) SSL_free(m->ssl);
      if (m->fd >= 0) ::close(m->fd);
    }
    if (epfd >= 0) ::close(epfd);
    if (wakefd >= 0) ::close(wakefd);
  }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu);
      commands.push_back(std::move(fn));
    }
    std::uint64_t one = 1;
    (void)!::write(wakefd, &one, sizeof one);
  }

  void Run() {
    std::vector<epoll_event> events(512);
    std::int64_t next_tick = 0;
    while (!stop.load()) {
      int n = ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), kTickMs);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == nullptr) {
          std::uint64_t v;
          (void)!::read(wakefd, &v, sizeof v);
          continue;
        }
        Drive(*static_cast<Member*>(events[i].data.ptr));
      }
      RunCommands();
      Now now = ClockNow();
      if (now.steady_ms >= next_tick) {
        next_tick = now.steady_ms + kTickMs;
        Tick(now);
      }
    }
    RunCommands();
  }

  void RunCommands() {
    std::vector<std::function<void()>> todo;
    {
      std::lock_guard lock(mu);
      todo.swap(commands);
    }
    for (auto& fn : todo)
      fn();
  }

  bool Connecting(const Member& m) const {
    return m.phase == Phase::kTcp || m.phase == Phase::kTls || m.phase == Phase::kConnack ||
           m.phase == Phase::kSuback;
  }

  void Tick(Now now) {
    const int cap = fleet->max_connecting_.load();
    const std::int64_t keepalive_ms =
        static_cast<std::int64_t>(fleet->options_.keepalive_seconds) * 1000;
    for (auto& mp : members) {
      Member& m = *mp;
      switch (m.phase) {
        case Phase::kBackoff:
          if (now.steady_ms >= m.attempt_at_ms) {
            // Pacing applies to first connects only: a real fleet's reconnects
            // are spread by their jittered backoff, nothing else.
            if (!m.ever_up && cap > 0 && connecting >= static_cast<std::size_t>(cap)) break;
            Attempt(m, now);
          }
          break;
        case Phase::kTcp:
        case Phase::kTls:
        case Phase::kConnack:
        case Phase::kSuback:
          if (now.steady_ms - m.attempt_at_ms > fleet->options_.connect_timeout.count()) {
            Lost(m, "connect timed out");
          }
          break;
        case Phase::kUp:
          m.endpoint->OnTick(now);
          Flush(m);
          if (keepalive_ms > 0) {
            if (now.steady_ms - m.last_rx_ms > keepalive_ms * 3 / 2) {
              Lost(m, "keepalive: nothing from the broker");
              break;
            }
            if (now.steady_ms - m.last_tx_ms >= keepalive_ms) {
              Queue(m, std::string("\xc0\x00", 2));  // PINGREQ
            }
          }
          break;
        case Phase::kClosing:
          if (now.steady_ms - m.closing_since_ms > 5000) Lost(m, "closing timed out");
          break;
        default:
          break;
      }
    }
  }

  // --- connection life -------------------------------------------------------
  void Attempt(Member& m, Now now) {
    m.attempt_at_ms = now.steady_ms;
    m.rbuf.clear();
    m.wbuf.clear();
    m.woff = 0;
    m.want_write = false;
    m.interest = 0;
    m.fd = ::socket(fleet->addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (m.fd < 0) {
      failures.fetch_add(1);
      return ScheduleRetry(m, now);
    }
    int one = 1;
    ::setsockopt(m.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(m.fd, reinterpret_cast<const sockaddr*>(&fleet->addr_), fleet->addr_len_);
    if (rc != 0 && errno != EINPROGRESS) {
      ::close(m.fd);
      m.fd = -1;
      failures.fetch_add(1);
      return ScheduleRetry(m, now);
    }
    m.phase = Phase::kTcp;
    ++connecting;
    epoll_event e{};
    e.events = EPOLLIN | EPOLLOUT;
    e.data.ptr = &m;
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, m.fd, &e);
    m.interest = e.events;
  }

  void ScheduleRetry(Member& m, Now now) {
    auto delay = m.backoff.Next(std::uniform_real_distribution<double>(0, 1)(rng));
    m.phase = Phase::kBackoff;
    m.attempt_at_ms = now.steady_ms + delay.count();
  }

  void CloseSocket(Member& m) {
    if (m.ssl != nullptr) {
      SSL_free(m.ssl);
      m.ssl = nullptr;
    }
    if (m.fd >= 0) {
      ::close(m.fd);  // also leaves the epoll set
      m.fd = -1;
    }
    m.rbuf.clear();
    m.rbuf.shrink_to_fit();
    m.wbuf.clear();
    m.wbuf.shrink_to_fit();
    m.woff = 0;
    m.interest = 0;
  }

  void Lost(Member& m, const char* why) {
    Now now = ClockNow();
    const Phase was = m.phase;
    CloseSocket(m);
    switch (was) {
      case Phase::kUp:
        log::Debug("sim: ", m.endpoint->client_id(), " lost: ", why);
        up.fetch_sub(1);
        losses.fetch_add(1);
        m.endpoint->OnDisconnected(now);
        m.endpoint->out().clear();
        ScheduleRetry(m, now);
        break;
      case Phase::kTcp:
      case Phase::kTls:
      case Phase::kConnack:
      case Phase::kSuback:
        log::Debug("sim: ", m.endpoint->client_id(), " connect failed: ", why);
        --connecting;
        failures.fetch_add(1);
        ScheduleRetry(m, now);
        break;
      case Phase::kClosing:
        m.phase = Phase::kStopped;
        break;
      default:
        break;
    }
  }

  // --- I/O -----------------------------------------------------------------
  void Drive(Member& m) {
    if (m.fd < 0) return;
    if (m.phase == Phase::kTcp) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(m.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return Lost(m, std::strerror(err));
      // Writable without error: connected (or still connecting: wait).
      sockaddr_storage peer{};
      socklen_t plen = sizeof peer;
      if (::getpeername(m.fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
        if (errno == ENOTCONN) return UpdateInterest(m, true);
        return Lost(m, std::strerror(errno));
      }
      m.ssl = SSL_new(fleet->tls_->ctx());
      if (m.ssl == nullptr || SSL_set_fd(m.ssl, m.fd) != 1 ||
          SSL_use_certificate(m.ssl, m.identity->cert()) != 1 ||
          SSL_use_PrivateKey(m.ssl, m.identity->key()) != 1) {
        return Lost(m, "TLS setup failed");
      }
      if (!fleet->host_is_address_) {
        // SSL_set_tlsext_host_name, without the macro's C cast.
        SSL_ctrl(m.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(fleet->options_.host.c_str()));
      }
      SSL_set_connect_state(m.ssl);
      m.phase = Phase::kTls;
    }
    if (m.phase == Phase::kTls) {
      ERR_clear_error();
      int rc = SSL_do_handshake(m.ssl);
      if (rc != 1) {
        int err = SSL_get_error(m.ssl, rc);
        if (err == SSL_ERROR_WANT_READ) return UpdateInterest(m, false);
        if (err == SSL_ERROR_WANT_WRITE) return UpdateInterest(m, true);
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        return Lost(m, buf);
      }
      m.phase = Phase::kConnack;
      std::string connect;
      EncodeConnect(&connect, m.endpoint->client_id(), fleet->options_.clean_session,
                    fleet->options_.keepalive_seconds, m.will);
      m.last_rx_ms = ClockNow().steady_ms;
      Queue(m, std::move(connect));
      if (m.fd < 0) return;
    }
    if (!ReadAll(m)) return;
    Write(m);
  }

  // Reads and handles everything available; false when the connection is gone.
  bool ReadAll(Member& m) {
    for (;;) {
      ERR_clear_error();
      int n = SSL_read(m.ssl, chunk.data(), static_cast<int>(chunk.size()));
      if (n > 0) {
        m.rbuf.append(chunk.data(), static_cast<std::size_t>(n));
        if (!Parse(m)) return false;
        if (m.fd < 0) return false;
        continue;
      }
      int err = SSL_get_error(m.ssl, n);
      if (err == SSL_ERROR_WANT_READ) return true;
      if (err == SSL_ERROR_WANT_WRITE) {
        m.want_write = true;
        return true;
      }
      Lost(m, err == SSL_ERROR_ZERO_RETURN ? "closed by the broker" : "read failed");
      return false;
    }
  }

  // Handles the complete packets in rbuf.
  bool Parse(Member& m) {
    std::size_t pos = 0;
    const std::string& b = m.rbuf;
    while (pos + 2 <= b.size()) {
      std::size_t remaining = 0;
      std::size_t mult = 1;
      std::size_t i = pos + 1;
      bool complete_len = false;
      for (int k = 0; k < 4 && i < b.size(); ++k, ++i) {
        auto byte = static_cast<unsigned char>(b[i]);
        remaining += (byte & 0x7f) * mult;
        mult *= 128;
        if ((byte & 0x80) == 0) {
          complete_len = true;
          ++i;
          break;
        }
      }
      if (!complete_len) {
        if (i - pos > 4) {
          Lost(m, "malformed packet length");
          return false;
        }
        break;
      }
      if (remaining > kMaxPacketBytes) {
        Lost(m, "packet too large");
        return false;
      }
      if (b.size() - i < remaining) break;
      const auto type = static_cast<unsigned char>(b[pos]);
      std::string_view body(b.data() + i, remaining);
      pos = i + remaining;
      if (!Handle(m, type, body)) return false;
      if (m.fd < 0) return false;
    }
    m.rbuf.erase(0, pos);
    return true;
  }

  bool Handle(Member& m, unsigned char type, std::string_view body) {
    Now now = ClockNow();
    m.last_rx_ms = now.steady_ms;
    switch (type >> 4) {
      case 2: {  // CONNACK
        if (m.phase != Phase::kConnack || body.size() < 2) break;
        if (body[1] != 0) {
          Lost(m, "connection refused by the broker");
          return false;
        }
        m.phase = Phase::kSuback;
        std::string sub;
        EncodeSubscribe(&sub, m.NextId(), m.subscriptions);
        Queue(m, std::move(sub));
        break;
      }
      case 9: {  // SUBACK
        if (m.phase != Phase::kSuback) break;
        for (std::size_t k = 2; k < body.size(); ++k) {
          if (static_cast<unsigned char>(body[k]) == 0x80) {
            Lost(m, "subscription refused");
            return false;
          }
        }
        --connecting;
        m.phase = Phase::kUp;
        m.ever_up = true;
        m.backoff.Reset();
        up.fetch_add(1);
        connects.fetch_add(1);
        m.endpoint->OnConnected(now);
        Flush(m);
        break;
      }
      case 3: {  // PUBLISH
        const int qos = (type >> 1) & 3;
        if (body.size() < 2) break;
        std::size_t tlen =
            (static_cast<unsigned char>(body[0]) << 8) | static_cast<unsigned char>(body[1]);
        std::size_t off = 2 + tlen;
        if (off > body.size()) break;
        std::string_view topic = body.substr(2, tlen);
        std::uint16_t id = 0;
        if (qos > 0) {
          if (off + 2 > body.size()) break;
          id = static_cast<std::uint16_t>((static_cast<unsigned char>(body[off]) << 8) |
                                          static_cast<unsigned char>(body[off + 1]));
          off += 2;
        }
        if (m.phase == Phase::kUp) {
          m.endpoint->OnMessage(topic, body.substr(off), now);
        }
        if (qos == 1) {
          std::string ack;
          EncodeAck(&ack, 0x40, id);
          Queue(m, std::move(ack));
        } else if (qos == 2) {
          std::string rec;
          EncodeAck(&rec, 0x50, id);  // PUBREC; the broker then sends PUBREL
          Queue(m, std::move(rec));
        }
        Flush(m);
        break;
      }
      case 6: {  // PUBREL (QoS 2, not used by Outpost)
        if (body.size() >= 2) {
          std::string comp;
          EncodeAck(&comp, 0x70,
                    static_cast<std::uint16_t>((static_cast<unsigned char>(body[0]) << 8) |
                                               static_cast<unsigned char>(body[1])));
          Queue(m, std::move(comp));
        }
        break;
      }
      default:  // PUBACK, PINGRESP, ...
        break;
    }
    return true;
  }

  // Appends bytes to send; writes at once when possible.
  void Queue(Member& m, std::string bytes) {
    if (m.fd < 0 || m.ssl == nullptr) return;
    if (m.wbuf.empty()) {
      m.wbuf = std::move(bytes);
      m.woff = 0;
    } else {
      m.wbuf.append(bytes);
    }
    m.last_tx_ms = ClockNow().steady_ms;
    Write(m);
  }

  void Write(Member& m) {
    if (m.fd < 0 || m.ssl == nullptr) return;
    m.want_write = false;
    while (m.woff < m.wbuf.size()) {
      ERR_clear_error();
      int n = SSL_write(m.ssl, m.wbuf.data() + m.woff, static_cast<int>(m.wbuf.size() - m.woff));
      if (n > 0) {
        m.woff += static_cast<std::size_t>(n);
        continue;
      }
      int err = SSL_get_error(m.ssl, n);
      if (err == SSL_ERROR_WANT_WRITE) {
        m.want_write = true;
        break;
      }
      if (err == SSL_ERROR_WANT_READ) break;
      Lost(m, "write failed");
      return;
    }
    if (m.woff >= m.wbuf.size()) {
      m.wbuf.clear();
      m.woff = 0;
      if (m.phase == Phase::kClosing) {
        SSL_shutdown(m.ssl);
        Lost(m, "closed");
        return;
      }
    }
    UpdateInterest(m, m.want_write);
  }

  void UpdateInterest(Member& m, bool want_out) {
    if (m.fd < 0) return;
    std::uint32_t want = EPOLLIN | (want_out ? EPOLLOUT : 0u);
    if (want == m.interest) return;
    epoll_event e{};
    e.events = want;
    e.data.ptr = &m;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, m.fd, &e);
    m.interest = want;
  }

  void Flush(Member& m) {
    auto& out = m.endpoint->out();
    if (out.empty()) return;
    if (m.phase == Phase::kUp && m.fd >= 0) {
      std::string bytes;
      for (auto& msg : out)
        EncodePublish(&bytes, m.NextId(), msg);
      Queue(m, std::move(bytes));
    }
    out.clear();
  }

  void Close(Member& m) {
    switch (m.phase) {
      case Phase::kUp:
        up.fetch_sub(1);
        m.phase = Phase::kClosing;
        m.closing_since_ms = ClockNow().steady_ms;
        Queue(m, std::string("\xe0\x00", 2));  // DISCONNECT
        break;
      case Phase::kTcp:
      case Phase::kTls:
      case Phase::kConnack:
      case Phase::kSuback:
        --connecting;
        CloseSocket(m);
        m.phase = Phase::kStopped;
        break;
      case Phase::kClosing:
        break;
      default:
        m.phase = Phase::kStopped;
        break;
    }
  }
};

Fleet::Fleet(FleetOptions options, const TlsClientContext* tls)
    : options_(std::move(options)), tls_(tls), max_connecting_(options_.max_connecting_per_thread) {
  const int n = std::max(1, options_.threads);
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->fleet = this;
    w->epfd = ::epoll_create1(EPOLL_CLOEXEC);
    w->wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.ptr = nullptr;
    ::epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &e);
    workers_.push_back(std::move(w));
  }
}

Fleet::~Fleet() {
  Stop();
}

void Fleet::Add(Endpoint* endpoint, const TlsIdentity* identity) {
  Worker& w = *workers_[next_worker_++ % workers_.size()];
  auto m = std::make_unique<Member>();
  m->endpoint = endpoint;
  m->identity = identity;
  m->worker = &w;
  m->backoff = Backoff(options_.min_retry, options_.max_retry, 0.5);
  m->subscriptions = endpoint->Subscriptions();
  m->will = endpoint->Will();
  w.members.push_back(std::move(m));
  ++members_;
}

Status Fleet::Start() {
  if (started_) return Error(Errc::kFailedPrecondition, "fleet already started");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(options_.port);
  if (int rc = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return Error(Errc::kUnavailable, "cannot resolve " + options_.host + ": " + ::gai_strerror(rc));
  }
  std::memcpy(&addr_, res->ai_addr, res->ai_addrlen);
  addr_len_ = res->ai_addrlen;
  ::freeaddrinfo(res);
  unsigned char buf[16];
  host_is_address_ = ::inet_pton(AF_INET, options_.host.c_str(), buf) == 1 ||
                     ::inet_pton(AF_INET6, options_.host.c_str(), buf) == 1;
  for (auto& w : workers_) {
    for (auto& m : w->members) {
      m->phase = Phase::kBackoff;
      m->attempt_at_ms = 0;
    }
  }
  started_ = true;
  for (auto& w : workers_) {
    Worker* wp = w.get();
    w->thread = std::thread([wp] { wp->Run(); });
  }
  return OkStatus();
}

void Fleet::ForEach(const std::function<void(Endpoint&, Now)>& fn) {
  if (!started_) return;
  std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([wp, &fn, &done] {
      for (auto& mp : wp->members) {
        fn(*mp->endpoint, ClockNow());
        wp->Flush(*mp);
      }
      done.count_down();
    });
  }
  done.wait();
}

void Fleet::DisconnectAll(const std::function<void(Endpoint&, Now)>& before,
                          std::chrono::milliseconds timeout) {
  if (!started_) return;
  std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([wp, &before, &done] {
      for (auto& mp : wp->members) {
        Member& m = *mp;
        if (m.phase == Phase::kUp && before) {
          before(*m.endpoint, ClockNow());
          wp->Flush(m);
        }
        wp->Close(m);
      }
      done.count_down();
    });
  }
  done.wait();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::atomic<std::size_t> open{0};
    std::latch counted(static_cast<std::ptrdiff_t>(workers_.size()));
    for (auto& w : workers_) {
      Worker* wp = w.get();
      wp->Post([wp, &open, &counted] {
        for (auto& mp : wp->members) {
          if (mp->phase == Phase::kClosing) open.fetch_add(1);
        }
        counted.count_down();
      });
    }
    counted.wait();
    if (open.load() == 0 || std::chrono::steady_clock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Fleet::Stop() {
  for (auto& w : workers_) {
    w->stop.store(true);
    std::uint64_t one = 1;
    (void)!::write(w->wakefd, &one, sizeof one);
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

FleetStats Fleet::Stats() const {
  FleetStats s;
  s.members = members_;
  for (const auto& w : workers_) {
    s.up += w->up.load();
    s.connects += w->connects.load();
    s.losses += w->losses.load();
    s.failures += w->failures.load();
  }
  return s;
}

TcpTraffic Fleet::Traffic() {
  TcpTraffic total;
  std::mutex mu;
  std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([wp, &total, &mu, &done] {
      TcpTraffic t;
      for (auto& mp : wp->members) {
        if (mp->fd < 0) continue;
        tcp_info info{};
        socklen_t len = sizeof info;
        if (::getsockopt(mp->fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) continue;
        ++t.sockets;
        t.bytes_sent += info.tcpi_bytes_acked;
        t.bytes_received += info.tcpi_bytes_received;
        t.segments_out += info.tcpi_segs_out;
        t.segments_in += info.tcpi_segs_in;
      }
      {
        std::lock_guard lock(mu);
        total.sockets += t.sockets;
        total.bytes_sent += t.bytes_sent;
        total.bytes_received += t.bytes_received;
        total.segments_out += t.segments_out;
        total.segments_in += t.segments_in;
      }
      done.count_down();
    });
  }
  done.wait();
  return total;
}

}  // namespace outpost::hub::sim
