// outpostctl: the operator's command line. Everything lives in hub/ctl.
#include <iostream>
#include <string>
#include <vector>

#include "hub/ctl/ctl.hpp"

int main(int argc, char** argv) {
  return outpost::hub::ctl::Main(std::vector<std::string>(argv, argv + argc), std::cout, std::cerr,
                                 outpost::hub::ctl::SystemEnv());
}
