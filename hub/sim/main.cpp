#include <string>
#include <vector>

#include "hub/sim/cli.hpp"

int main(int argc, char** argv) {
  return outpost::hub::sim::Main(std::vector<std::string>(argv + 1, argv + argc));
}
