// outpost-sim's command line (main.cpp only calls Main).
#pragma once

#include <string>
#include <vector>

namespace outpost::hub::sim {

int Main(const std::vector<std::string>& args);

}  // namespace outpost::hub::sim
