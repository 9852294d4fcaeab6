#include "agent/runtime/workload_env.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

namespace outpost::agent {

namespace v1 = outpost::v1;

namespace {

std::string JoinIndices(const std::vector<v1::Gpu>& gpus, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n && i < gpus.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(gpus[i].index());
  }
  return out;
}

}  // namespace

GpuSelection SelectGpus(const v1::GpuRequest& request, const std::vector<v1::Gpu>& gpus) {
  std::vector<v1::Gpu> sorted = gpus;
  std::sort(sorted.begin(), sorted.end(),
            [](const v1::Gpu& a, const v1::Gpu& b) { return a.index() < b.index(); });
  GpuSelection sel;
  std::size_t want = request.all() ? sorted.size() : request.count();
  if (want == 0) {
    sel.nvidia_visible_devices = "void";
    sel.cuda_visible_devices = "";
    return sel;
  }
  if (want > sorted.size()) {
    sel.shortage = "needs " + std::to_string(want) + " GPU" + (want == 1 ? "" : "s") + ", " +
                   std::to_string(sorted.size()) + " found";
    return sel;
  }
  sel.cuda_visible_devices = JoinIndices(sorted, want);
  sel.nvidia_visible_devices = request.all() ? "all" : sel.cuda_visible_devices;
  return sel;
}

std::vector<std::string> BuildEnvironment(const v1::WorkloadSpec& spec, const GpuSelection& gpus,
                                          const std::optional<UserIds>& user,
                                          const std::string& agent_path) {
  std::map<std::string, std::string> env;
  env["PATH"] = agent_path.empty() ? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                                   : agent_path;
  if (user) {
    env["HOME"] = user->home.empty() ? "/" : user->home;
    env["USER"] = user->name;
    env["LOGNAME"] = user->name;
  }
  env["OUTPOST_WORKLOAD"] = spec.name();
  for (const auto& [k, v] : spec.env())
    env[k] = v;
  if (!spec.env().contains("NVIDIA_VISIBLE_DEVICES")) {
    env["NVIDIA_VISIBLE_DEVICES"] = gpus.nvidia_visible_devices;
  }
  if (!spec.env().contains("CUDA_VISIBLE_DEVICES")) {
    env["CUDA_VISIBLE_DEVICES"] = gpus.cuda_visible_devices;
  }
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env)
    out.push_back(k + "=" + v);
  return out;
}

std::string DevicePathUnder(const std::string& dev_root, const std::string& spec_path) {
  if (dev_root.empty() || dev_root == "/dev") return spec_path;
  if (spec_path.rfind("/dev/", 0) != 0) return spec_path;
  std::string root = dev_root;
  while (root.size() > 1 && root.back() == '/')
    root.pop_back();
  return root + spec_path.substr(4);
}

std::string EffectiveSpecHash(const v1::WorkloadSpec& spec) {
  if (!spec.spec_hash().empty()) return spec.spec_hash();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&coded);
  }
  // FNV-1a 64: only needs to tell specs apart on this device.
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "local-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace outpost::agent
