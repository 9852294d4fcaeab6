#include "agent/discovery/discovery.hpp"
