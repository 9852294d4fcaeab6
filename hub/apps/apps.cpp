#include "hub/apps/apps.hpp"

namespace outpost::hub::apps {}  // namespace outpost::hub::apps
