#include "hub/registry/registry.hpp"

namespace outpost::hub::registry {}  // namespace outpost::hub::registry
