// The outpostctl command line (CONTRACT.md): tokens, devices, applications,
// rollouts, over the hub's admin API. Main takes everything from outside
// (environment, clock, terminal, the HTTP transport) through CtlEnv, so the
// commands are testable with a fake hub.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "hub/ctl/config.hpp"
#include "shared/core/result.hpp"

namespace outpost::hub::ctl {

struct ApiResponse {
  int status = 0;
  std::string body;
};

// One admin API call; transport failures are errors, any HTTP status a value.
class HubApi {
 public:
  virtual ~HubApi() = default;
  virtual Result<ApiResponse> Call(const std::string& method, const std::string& target,
                                   const std::string& body, const std::string& content_type) = 0;
};

// The real transport: shared/http with the CA file and the bearer token.
Result<std::unique_ptr<HubApi>> ConnectHttp(const Connection& connection);

struct CtlEnv {
  GetEnv getenv;
  std::function<std::int64_t()> now_ms;
  std::function<void(std::chrono::milliseconds)> sleep;
  bool stdout_is_tty = false;
  std::function<Result<std::unique_ptr<HubApi>>(const Connection&)> connect = ConnectHttp;
  // Reads `apply -f` files ("-": standard input).
  std::function<Result<std::string>(const std::string& path)> read_file;
};

// The process environment: getenv, the system clock, isatty(1), real files.
CtlEnv SystemEnv();

// args[0] is the program name. Returns the exit code: 0 success, 1 failure,
// 2 usage error.
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
         const CtlEnv& env);

}  // namespace outpost::hub::ctl
