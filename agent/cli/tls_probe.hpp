// A real TLS handshake with the broker using the device certificate, for
// `doctor`: proves the broker is reachable, presents a certificate of the
// pinned CA for its name, and does not refuse ours.
#pragma once

#include <chrono>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::agent::cli {

Status ProbeTls(const std::string& host, const std::string& port, const std::string& ca_pem,
                const std::string& cert_pem, const std::string& key_pem,
                std::chrono::milliseconds timeout);

}  // namespace outpost::agent::cli
