// outpost-hub: the CloudCore role. Everything lives in hub/cli.
#include <iostream>
#include <string>
#include <vector>

#include "hub/cli/hub_cli.hpp"

int main(int argc, char** argv) {
  return outpost::hub::cli::Main(std::vector<std::string>(argv, argv + argc), std::cout, std::cerr);
}
