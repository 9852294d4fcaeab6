#include "agent/runtime/supervisor.hpp"
