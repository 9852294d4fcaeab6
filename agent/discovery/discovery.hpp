// outpost::agent discovery — the device facts sent at enrollment and in
// reports when they change (issue 4, item 9): NVIDIA GPUs, V4L2 cameras, and
// the host (hostname, architecture, OS, kernel, GPU driver).
//
// Everything is read below configurable roots so tests point them at
// prepared directories. Nothing here throws or fails: what cannot be read is
// left out (and logged at debug level); discovery never blocks the agent for
// long (nvidia-smi runs with a timeout and bounded output).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "outpost.pb.h"

namespace outpost::agent {

struct DiscoveryRoots {
  std::string proc_root = "/proc";  // <proc_root>/driver/nvidia/...
  std::string dev_root = "/dev";    // <dev_root>/nvidia[0-9]*, <dev_root>/video*
  std::string etc_root = "/etc";    // <etc_root>/os-release (fallback /usr/lib/os-release)
  // nvidia-smi: a path, "" = search PATH, "-" = never run it.
  std::string nvidia_smi;
  std::chrono::milliseconds nvidia_smi_timeout{5000};
};

// NVIDIA GPUs, sorted by index, merged from
//   <proc_root>/driver/nvidia/gpus/*/information  (Model, GPU UUID, Device Minor)
//   <dev_root>/nvidia[0-9]*                       (device nodes; index = N)
//   nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv,noheader,nounits
// matched by UUID. `index` is nvidia-smi's index when it ran (the numbering
// NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES use), else the device
// minor; `device_path` is "/dev/nvidia<minor>". nvidia-smi blocks up to
// `nvidia_smi_timeout`: call this off the hot path (at start, on enrollment,
// rarely afterwards).
std::vector<outpost::v1::Gpu> DiscoverGpus(const DiscoveryRoots& roots);

// V4L2 capture devices <dev_root>/video*, sorted by number, named through
// VIDIOC_QUERYCAP (card, driver, bus_info). Nodes whose device_caps lack
// V4L2_CAP_VIDEO_CAPTURE (metadata nodes) are skipped; a node the ioctl
// fails on (not a V4L2 device, e.g. a plain file in a test dir, or no
// permission) is listed with its path only.
std::vector<outpost::v1::Camera> DiscoverCameras(const DiscoveryRoots& roots);

// hostname (<proc_root>/sys/kernel/hostname, else uname), arch (dpkg name of
// the build target: amd64, arm64, armhf), os (PRETTY_NAME of
// <etc_root>/os-release), kernel (<proc_root>/sys/kernel/osrelease, else
// uname), agent_version (OUTPOST_VERSION), gpu_driver_version
// (<proc_root>/driver/nvidia/version), gpus, cameras.
outpost::v1::DeviceFacts CollectFacts(const DiscoveryRoots& roots);

// What VIDIOC_QUERYCAP reported for one node.
struct V4l2Caps {
  std::string card, driver, bus_info;
  std::uint32_t capabilities = 0;  // V4L2_CAP_* of the whole device
  std::uint32_t device_caps = 0;   // of this node (valid with V4L2_CAP_DEVICE_CAPS)
};
// The Camera for a node, or nullopt when the node cannot capture video
// (V4L2_CAP_VIDEO_CAPTURE or _MPLANE missing from the node's caps).
std::optional<outpost::v1::Camera> CameraFromCaps(const std::string& path, const V4l2Caps& caps);

// Parsers, exposed for tests.
// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu ..." -> "535.129.03"
std::string ParseNvidiaDriverVersion(const std::string& proc_version_text);
// nvidia-smi csv (see above) -> GPUs with index, name, uuid, memory_mib.
std::vector<outpost::v1::Gpu> ParseNvidiaSmiCsv(const std::string& csv);
// os-release text -> PRETTY_NAME (unquoted), "" when absent.
std::string ParseOsReleasePrettyName(const std::string& text);

}  // namespace outpost::agent
