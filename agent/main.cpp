// outpost-agent: everything lives in agent/cli (testable); this only wires
// the process's streams to it.
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "agent/cli/cli.hpp"

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // One malloc arena for all threads: the agent allocates little, and each
  // extra arena glibc gives a thread keeps its own dirty pages (about 250 KiB
  // of PSS with five threads; docs/benchmarks.md).
  ::mallopt(M_ARENA_MAX, 1);
#endif
  std::vector<std::string> args(argv + 1, argv + argc);
  const bool color = ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  return outpost::agent::cli::Main(args, {std::cout, std::cerr, color, 0});
}
