#include "hub/ctl/config.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include "shared/core/fs.hpp"

namespace outpost::hub::ctl {

Result<Connection> ParseCtlYaml(std::string_view text, const std::string& base_dir) {
  Connection c;
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (root.IsNull()) return c;
    if (!root.IsMap()) return Error(Errc::kInvalidArgument, "must be a mapping");
    for (const auto& kv : root) {
      auto key = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) {
        return Error(Errc::kInvalidArgument, key + ": must be a string");
      }
      auto value = kv.second.as<std::string>();
      if (key == "hub") {
        c.hub_url = value;
      } else if (key == "token") {
        c.token = value;
      } else if (key == "ca") {
        c.ca_path = value;
      } else {
        return Error(Errc::kInvalidArgument, key + ": unknown key (expected hub, token, ca)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Error(Errc::kInvalidArgument, std::string("not valid YAML: ") + e.what());
  }
  if (!c.ca_path.empty() && c.ca_path.front() != '/') c.ca_path = fs::Join(base_dir, c.ca_path);
  return c;
}

Result<Connection> ResolveConnection(const ConnectionFlags& flags, const GetEnv& env) {
  Connection file;
  std::string config = flags.config;
  bool explicit_config = !config.empty();
  if (!explicit_config && ::access(kDefaultCtlConfig, R_OK) == 0) config = kDefaultCtlConfig;
  if (!config.empty()) {
    auto text = fs::ReadFile(config, 64 << 10);
    if (!text.ok()) {
      if (explicit_config) return text.error().WithContext("reading " + config);
    } else {
      auto parsed = ParseCtlYaml(*text, fs::DirName(config));
      if (!parsed.ok()) return parsed.error().WithContext(config);
      file = std::move(*parsed);
    }
  }
  auto pick = [&](const std::string& flag, const char* env_name, const std::string& from_file) {
    if (!flag.empty()) return flag;
    if (auto v = env(env_name); v && !v->empty()) return *v;
    return from_file;
  };
  Connection c;
  c.hub_url = pick(flags.hub, "OUTPOST_HUB", file.hub_url);
  c.token = pick(flags.token, "OUTPOST_ADMIN_TOKEN", file.token);
  c.ca_path = pick(flags.ca, "OUTPOST_CA", file.ca_path);
  if (c.hub_url.empty()) {
    return Error(Errc::kInvalidArgument,
                 "no hub given: use --config <ctl.yaml>, --hub URL or OUTPOST_HUB");
  }
  if (c.token.empty()) {
    return Error(Errc::kInvalidArgument,
                 "no admin token given: use --config <ctl.yaml>, --token or OUTPOST_ADMIN_TOKEN");
  }
  if (c.ca_path.empty() && c.hub_url.rfind("https://", 0) == 0) {
    return Error(Errc::kInvalidArgument,
                 "no hub CA given: use --config <ctl.yaml>, --ca FILE or OUTPOST_CA");
  }
  return c;
}

}  // namespace outpost::hub::ctl
