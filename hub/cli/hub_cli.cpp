#include "hub/cli/hub_cli.hpp"

#include <signal.h>

#include <charconv>
#include <cstring>

#include "hub/init/init.hpp"
#include "hub/init/layout.hpp"
#include "hub/server/hub.hpp"
#include "shared/core/log.hpp"

namespace outpost::hub::cli {
namespace {

constexpr const char* kUsage =
    "usage: outpost-hub <command> [options]\n"
    "\n"
    "commands:\n"
    "  init --data-dir DIR --hostname NAME [--broker-port P] [--api-port P] [--force]\n"
    "        create the hub CA, certificates, admin token, ctl.yaml and mosquitto.conf\n"
    "  serve [--data-dir DIR] [--config FILE]\n"
    "        run the hub (HTTPS API and MQTT link) until SIGINT/SIGTERM\n"
    "  version\n"
    "        print the version\n";

// --flag VALUE or --flag=VALUE.
class Args {
 public:
  Args(const std::vector<std::string>& args, std::size_t start) : args_(args), i_(start) {}
  bool Done() const { return i_ >= args_.size(); }
  // True when the current argument is `flag`; fills `value` from the next
  // argument or after '='. Sets `missing` when the value is absent.
  bool Take(const char* flag, std::string* value, bool* missing) {
    const std::string& a = args_[i_];
    std::size_t n = std::strlen(flag);
    if (a == flag) {
      if (i_ + 1 >= args_.size()) {
        *missing = true;
        ++i_;
        return true;
      }
      *value = args_[i_ + 1];
      i_ += 2;
      return true;
    }
    if (a.size() > n && a.compare(0, n, flag) == 0 && a[n] == '=') {
      *value = a.substr(n + 1);
      ++i_;
      return true;
    }
    return false;
  }
  bool TakeSwitch(const char* flag) {
    if (args_[i_] == flag) {
      ++i_;
      return true;
    }
    return false;
  }
  const std::string& Current() const { return args_[i_]; }

 private:
  const std::vector<std::string>& args_;
  std::size_t i_;
};

bool ParsePort(const std::string& text, int* port) {
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < 1 || value > 65535) {
    return false;
  }
  *port = value;
  return true;
}

int Init(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  InitOptions options;
  Args a(args, 2);
  while (!a.Done()) {
    std::string value;
    bool missing = false;
    if (a.Take("--data-dir", &options.data_dir, &missing) ||
        a.Take("--hostname", &options.hostname, &missing)) {
    } else if (a.Take("--broker-port", &value, &missing)) {
      if (!missing && !ParsePort(value, &options.broker_port)) {
        err << "outpost-hub init: --broker-port \"" << value << "\" is not a port number\n";
        return 2;
      }
    } else if (a.Take("--api-port", &value, &missing)) {
      if (!missing && !ParsePort(value, &options.api_port)) {
        err << "outpost-hub init: --api-port \"" << value << "\" is not a port number\n";
        return 2;
      }
    } else if (a.TakeSwitch("--force")) {
      options.force = true;
    } else {
      err << "outpost-hub init: unknown argument \"" << a.Current() << "\"\n" << kUsage;
      return 2;
    }
    if (missing) {
      err << "outpost-hub init: a flag is missing its value\n";
      return 2;
    }
  }
  if (options.data_dir.empty() || options.hostname.empty()) {
    err << "outpost-hub init: --data-dir and --hostname are required\n";
    return 2;
  }
  auto result = InitHub(options);
  if (!result.ok()) {
    err << "outpost-hub init: " << result.error().message() << "\n";
    return 1;
  }
  out << "initialized hub in " << result->data_dir << "\n"
      << "  CA hash:  " << result->ca_hash << "\n"
      << "  broker:   mosquitto -c " << result->data_dir << "/mosquitto.conf\n"
      << "  hub:      outpost-hub serve --data-dir " << result->data_dir << "\n"
      << "  operator: outpostctl --config " << result->data_dir << "/ctl.yaml token create\n";
  return 0;
}

int Serve(const std::vector<std::string>& args, std::ostream& err) {
  server::ServeOptions options;
  Args a(args, 2);
  while (!a.Done()) {
    bool missing = false;
    if (a.Take("--data-dir", &options.data_dir, &missing) ||
        a.Take("--config", &options.config_path, &missing)) {
      if (missing) {
        err << "outpost-hub serve: a flag is missing its value\n";
        return 2;
      }
    } else {
      err << "outpost-hub serve: unknown argument \"" << a.Current() << "\"\n" << kUsage;
      return 2;
    }
  }
  // Block the stop signals before any thread starts, so that every thread
  // inherits the mask and sigwait below is the only receiver.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &set, &previous);
  // A peer closing a socket must not kill the process.
  ::signal(SIGPIPE, SIG_IGN);

  auto hub = server::Hub::Start(options);
  if (!hub.ok()) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    err << "outpost-hub serve: " << hub.error().message() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  log::Info("signal ", sig, ": stopping");
  (*hub)->Stop();
  return 0;
}

}  // namespace

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.size() < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help") {
    (args.size() < 2 ? err : out) << kUsage;
    return args.size() < 2 ? 2 : 0;
  }
  const std::string& cmd = args[1];
  if (cmd == "version" || cmd == "--version") {
    out << "outpost-hub " << OUTPOST_VERSION << "\n";
    return 0;
  }
  if (cmd == "init") return Init(args, out, err);
  if (cmd == "serve") return Serve(args, err);
  err << "outpost-hub: unknown command \"" << cmd << "\"\n" << kUsage;
  return 2;
}

}  // namespace outpost::hub::cli
