// outpost-agent: everything lives in agent/cli (testable); this only wires
// the process's streams to it.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "agent/cli/cli.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const bool color = ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  return outpost::agent::cli::Main(args, {std::cout, std::cerr, color, 0});
}
