// Discovery on prepared directories (proc, dev, etc roots) and a fake nvidia-smi.
#include "agent/discovery/discovery.hpp"

#include <linux/videodev2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>

#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::agent {
namespace {

namespace v1 = outpost::v1;
using outpost::testing::TempDir;

void Write(const std::string& path, const std::string& text, mode_t mode = 0644) {
  ASSERT_TRUE(fs::MakeDirs(fs::DirName(path)).ok());
  { std::ofstream(path) << text; }
  ::chmod(path.c_str(), mode);
}

class DiscoveryTest : public ::testing::Test {
 protected:
  DiscoveryTest() {
    roots_.proc_root = dir_ / "proc";
    roots_.dev_root = dir_ / "dev";
    roots_.etc_root = dir_ / "etc";
    roots_.nvidia_smi = "-";
    EXPECT_TRUE(fs::MakeDirs(roots_.proc_root).ok());
    EXPECT_TRUE(fs::MakeDirs(roots_.dev_root).ok());
  }

  void TwoGpusInProcAndDev() {
    Write(dir_ / "proc/driver/nvidia/gpus/0000:01:00.0/information",
          "Model: \t\t NVIDIA A100-SXM4-40GB\nIRQ:   \t\t 150\nGPU UUID: \t GPU-aaa\n"
          "Video BIOS: \t 92.00.19.00.01\nBus Type: \t PCIe\nDevice Minor: \t 0\n");
    Write(dir_ / "proc/driver/nvidia/gpus/0000:02:00.0/information",
          "Model: \t\t Tesla T4\nGPU UUID: \t GPU-bbb\nDevice Minor: \t 1\n");
    for (const char* n : {"nvidia0", "nvidia1", "nvidia3", "nvidiactl", "nvidia-uvm"}) {
      Write(dir_ / (std::string("dev/") + n), "");
    }
  }

  TempDir dir_{"outpost-discovery"};
  DiscoveryRoots roots_;
};

TEST_F(DiscoveryTest, NoNvidiaNoGpus) {
  EXPECT_TRUE(DiscoverGpus(roots_).empty());
}

TEST_F(DiscoveryTest, GpusFromProcAndDevNodes) {
  TwoGpusInProcAndDev();
  auto gpus = DiscoverGpus(roots_);
  ASSERT_EQ(gpus.size(), 3u);
  EXPECT_EQ(gpus[0].index(), 0u);
  EXPECT_EQ(gpus[0].name(), "NVIDIA A100-SXM4-40GB");
  EXPECT_EQ(gpus[0].uuid(), "GPU-aaa");
  EXPECT_EQ(gpus[0].device_path(), "/dev/nvidia0");
  EXPECT_EQ(gpus[1].index(), 1u);
  EXPECT_EQ(gpus[1].name(), "Tesla T4");
  EXPECT_EQ(gpus[1].device_path(), "/dev/nvidia1");
  // A device node the driver's proc tree does not describe: index and path only.
  EXPECT_EQ(gpus[2].index(), 3u);
  EXPECT_EQ(gpus[2].device_path(), "/dev/nvidia3");
  EXPECT_TRUE(gpus[2].name().empty());
}

TEST_F(DiscoveryTest, NvidiaSmiGivesIndexNameAndMemory) {
  TwoGpusInProcAndDev();
  std::string smi = dir_ / "bin/nvidia-smi";
  // Checks it is called with the documented query; numbers the T4 first.
  Write(smi,
        "#!/bin/sh\n"
        "[ \"$1\" = --query-gpu=index,name,uuid,memory.total ] || exit 2\n"
        "[ \"$2\" = --format=csv,noheader,nounits ] || exit 2\n"
        "echo '0, Tesla T4, GPU-bbb, 15360'\n"
        "echo '1, NVIDIA A100-SXM4-40GB, GPU-aaa, 40960'\n",
        0755);
  roots_.nvidia_smi = smi;
  auto gpus = DiscoverGpus(roots_);
  ASSERT_EQ(gpus.size(), 3u);
  EXPECT_EQ(gpus[0].index(), 0u);
  EXPECT_EQ(gpus[0].uuid(), "GPU-bbb");
  EXPECT_EQ(gpus[0].memory_mib(), 15360u);
  EXPECT_EQ(gpus[0].device_path(), "/dev/nvidia1");  // matched by UUID to minor 1
  EXPECT_EQ(gpus[1].index(), 1u);
  EXPECT_EQ(gpus[1].name(), "NVIDIA A100-SXM4-40GB");
  EXPECT_EQ(gpus[1].memory_mib(), 40960u);
  EXPECT_EQ(gpus[1].device_path(), "/dev/nvidia0");
  EXPECT_EQ(gpus[2].index(), 3u);
}

TEST_F(DiscoveryTest, HangingNvidiaSmiIsKilledAfterTimeout) {
  TwoGpusInProcAndDev();
  std::string smi = dir_ / "bin/nvidia-smi";
  Write(smi, "#!/bin/sh\nexec sleep 30\n", 0755);
  roots_.nvidia_smi = smi;
  roots_.nvidia_smi_timeout = std::chrono::milliseconds(200);
  auto start = std::chrono::steady_clock::now();
  auto gpus = DiscoverGpus(roots_);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(gpus.size(), 3u);  // the proc/dev view still stands
  EXPECT_EQ(gpus[0].memory_mib(), 0u);
}

TEST_F(DiscoveryTest, FailingNvidiaSmiIsIgnored) {
  TwoGpusInProcAndDev();
  std::string smi = dir_ / "bin/nvidia-smi";
  Write(smi, "#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n", 0755);
  roots_.nvidia_smi = smi;
  EXPECT_EQ(DiscoverGpus(roots_).size(), 3u);
}

TEST_F(DiscoveryTest, CamerasFromVideoNodes) {
  Write(dir_ / "dev/video0", "");
  Write(dir_ / "dev/video10", "");
  Write(dir_ / "dev/video2", "");
  Write(dir_ / "dev/videox", "");
  ASSERT_TRUE(fs::MakeDirs(dir_ / "dev/video3").ok());
  // A character device that is not V4L2: the ioctl fails, the path is kept.
  ASSERT_EQ(::symlink("/dev/null", (dir_ / "dev/video5").c_str()), 0);
  auto cams = DiscoverCameras(roots_);
  ASSERT_EQ(cams.size(), 4u);
  EXPECT_EQ(cams[0].path(), dir_ / "dev/video0");
  EXPECT_EQ(cams[1].path(), dir_ / "dev/video2");
  EXPECT_EQ(cams[2].path(), dir_ / "dev/video5");
  EXPECT_EQ(cams[3].path(), dir_ / "dev/video10");
  for (const auto& c : cams)
    EXPECT_TRUE(c.name().empty());
}

TEST(CameraFromCaps, CaptureNodesOnly) {
  V4l2Caps capture;
  capture.card = "HD Pro Webcam C920";
  capture.driver = "uvcvideo";
  capture.bus_info = "usb-0000:00:14.0-1";
  capture.capabilities = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_META_CAPTURE | V4L2_CAP_DEVICE_CAPS;
  capture.device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
  auto cam = CameraFromCaps("/dev/video0", capture);
  ASSERT_TRUE(cam.has_value());
  EXPECT_EQ(cam->path(), "/dev/video0");
  EXPECT_EQ(cam->name(), "HD Pro Webcam C920");
  EXPECT_EQ(cam->driver(), "uvcvideo");
  EXPECT_EQ(cam->bus(), "usb-0000:00:14.0-1");

  V4l2Caps meta = capture;  // the metadata node of the same camera
  meta.device_caps = V4L2_CAP_META_CAPTURE | V4L2_CAP_STREAMING;
  EXPECT_FALSE(CameraFromCaps("/dev/video1", meta).has_value());

  V4l2Caps old;  // no per-node caps: the device caps decide
  old.capabilities = V4L2_CAP_VIDEO_CAPTURE_MPLANE;
  EXPECT_TRUE(CameraFromCaps("/dev/video2", old).has_value());
  old.capabilities = V4L2_CAP_VIDEO_OUTPUT;
  EXPECT_FALSE(CameraFromCaps("/dev/video2", old).has_value());
}

TEST(ParseNvidiaDriverVersion, ProprietaryAndOpenModules) {
  EXPECT_EQ(ParseNvidiaDriverVersion("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  "
                                     "Thu Oct 19 18:56:32 UTC 2023\nGCC version:  gcc 12.2.0\n"),
            "535.129.03");
  EXPECT_EQ(ParseNvidiaDriverVersion("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  "
                                     "540.3.0  Release Build\n"),
            "540.3.0");
  EXPECT_EQ(ParseNvidiaDriverVersion(""), "");
  EXPECT_EQ(ParseNvidiaDriverVersion("garbage 12 x\n"), "");
}

TEST(ParseNvidiaSmiCsv, SkipsMalformedLines) {
  auto gpus = ParseNvidiaSmiCsv(
      "0, Tesla T4, GPU-1, 15360\nnot a line\nx, A, B, 1\n2, NVIDIA L4, GPU-2, [N/A]\n");
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].name(), "Tesla T4");
  EXPECT_EQ(gpus[1].index(), 2u);
  EXPECT_EQ(gpus[1].memory_mib(), 0u);
}

TEST(ParseOsReleasePrettyName, QuotedAndPlain) {
  EXPECT_EQ(ParseOsReleasePrettyName("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 "
                                     "(bookworm)\"\nID=debian\n"),
            "Debian GNU/Linux 12 (bookworm)");
  EXPECT_EQ(ParseOsReleasePrettyName("PRETTY_NAME=Alpine\n"), "Alpine");
  EXPECT_EQ(ParseOsReleasePrettyName("ID=x\n"), "");
}

TEST_F(DiscoveryTest, CollectFactsReadsTheRoots) {
  TwoGpusInProcAndDev();
  Write(dir_ / "dev/video0", "");
  Write(dir_ / "proc/sys/kernel/hostname", "edge-01\n");
  Write(dir_ / "proc/sys/kernel/osrelease", "6.1.0-test-arm64\n");
  Write(dir_ / "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 2023\n");
  Write(dir_ / "etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");
  auto facts = CollectFacts(roots_);
  EXPECT_EQ(facts.hostname(), "edge-01");
  EXPECT_EQ(facts.kernel(), "6.1.0-test-arm64");
  EXPECT_EQ(facts.os(), "Debian GNU/Linux 12 (bookworm)");
  EXPECT_EQ(facts.gpu_driver_version(), "535.129.03");
  EXPECT_EQ(facts.agent_version(), OUTPOST_VERSION);
#if defined(__x86_64__)
  EXPECT_EQ(facts.arch(), "amd64");
#elif defined(__aarch64__)
  EXPECT_EQ(facts.arch(), "arm64");
#elif defined(__arm__)
  EXPECT_EQ(facts.arch(), "armhf");
#endif
  EXPECT_EQ(facts.gpus_size(), 3);
  EXPECT_EQ(facts.cameras_size(), 1);
}

TEST_F(DiscoveryTest, CollectFactsFallsBackToUname) {
  auto facts = CollectFacts(roots_);
  EXPECT_FALSE(facts.hostname().empty());
  EXPECT_FALSE(facts.kernel().empty());
  EXPECT_EQ(facts.os(), "");  // no os-release under the test etc root
  EXPECT_EQ(facts.gpu_driver_version(), "");
}

}  // namespace
}  // namespace outpost::agent
