// The `outpost-hub` command line: init, serve, version. hub/main.cpp calls
// Main; everything else is here, testable with an argument list.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace outpost::hub::cli {

// args[0] is the program name. Returns the process exit code.
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace outpost::hub::cli
