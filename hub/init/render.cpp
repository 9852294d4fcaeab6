#include "hub/init/render.hpp"

#include <sstream>

#include "shared/core/fs.hpp"

namespace outpost::hub {

bool PathUsableInMosquittoConf(const std::string& path) {
  if (path.empty() || path.front() != '/') return false;
  for (char c : path) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u == 0x7f || c == '#' || c == '"' || c == '\'' || c == '%') return false;
  }
  return true;
}

std::string RenderMosquittoConf(const BrokerConfParams& p) {
  auto file = [&](const char* name) { return fs::Join(p.data_dir, name); };
  std::ostringstream out;
  out << "# Mosquitto 2.0 configuration for the Outpost hub, written by `outpost-hub init`.\n"
      << "# Run it as it is: mosquitto -c " << file("mosquitto.conf") << "\n"
      << "# (docs/hub.md explains every line; re-run init with --force to regenerate.)\n"
      << "\n"
      << "# Privileges. Started as root, mosquitto switches to the account named by\n"
      << "# `user` before it reads the TLS files and writes its persistence file\n"
      << "# (its default account, `mosquitto`, could not read the 0600 broker key).\n"
      << "# The account here is the owner of the data directory, who owns every file\n"
      << "# in it: the key, the CRL the hub rewrites on revocation, and the\n"
      << "# persistence file. Started as any other user, mosquitto ignores this line.\n"
      << "# For production, let a dedicated account own the data directory (run\n"
      << "# `outpost-hub init` as that account, or chown the directory to it first:\n"
      << "# init then gives it the files) and the broker runs as that account.\n"
      << "user " << p.run_user << "\n"
      << "\n"
      << "# Retained desired documents and the hub's persistent session survive a\n"
      << "# broker restart.\n"
      << "persistence true\n"
      << "persistence_location " << p.data_dir << "/\n"
      << "persistence_file mosquitto.db\n"
      << "autosave_interval 60\n"
      << "# Sessions of devices gone for a month are forgotten.\n"
      << "persistent_client_expiration 30d\n"
      << "# The hub's persistent session queues reports and events while it is away,\n"
      << "# and takes a whole fleet's answers to a rollout at once (a report and an\n"
      << "# event batch per device): past this bound the broker drops messages.\n"
      << "max_queued_messages 200000\n"
      << "# QoS 1 messages on their way to one client before it acknowledges them\n"
      << "# (default 20): the hub receives every device's reports through one\n"
      << "# connection, and a window of 20 round trips paces it.\n"
      << "max_inflight_messages 1000\n"
      << "# Signed desired documents are at most 1 MiB (docs/protocol.md); nothing\n"
      << "# larger is accepted from anyone.\n"
      << "max_packet_size 1100000\n"
      << "pid_file " << file("mosquitto.pid") << "\n"
      << "log_dest stderr\n"
      << "log_type error\n"
      << "log_type warning\n"
      << "log_type notice\n"
      << "log_type information\n"
      << "\n"
      << "# Nobody connects without a client certificate signed by the hub CA; the\n"
      << "# certificate's CN is the MQTT username the ACL below is written against.\n"
      << "per_listener_settings false\n"
      << "allow_anonymous false\n"
      << "acl_file " << file("mosquitto.acl") << "\n"
      << "\n"
      << "# One listener, TLS only, on every interface.\n"
      << "listener " << p.port << "\n"
      << "protocol mqtt\n"
      << "cafile " << file("ca.crt") << "\n"
      << "certfile " << file("broker.crt") << "\n"
      << "keyfile " << file("broker.key") << "\n"
      << "require_certificate true\n"
      << "use_identity_as_username true\n"
      << "# Revoked device certificates. The hub rewrites this file on `device revoke`\n"
      << "# and sends SIGHUP to the pid in pid_file: mosquitto 2.0.11 then reloads\n"
      << "# certificates and this CRL for new connections (connected clients stay).\n"
      << "crlfile " << file("crl.pem") << "\n"
      << "tls_version tlsv1.2\n";
  return out.str();
}

std::string RenderMosquittoAcl() {
  return "# Mosquitto ACL for the Outpost hub, written by `outpost-hub init`.\n"
         "# Usernames are certificate CNs (use_identity_as_username).\n"
         "\n"
         "# The hub reads and writes every device topic.\n"
         "user outpost-hub\n"
         "topic readwrite outpost/v1/devices/#\n"
         "\n"
         "# Every device (%u = its certificate CN = its device id) reads its own\n"
         "# desired document and acks, and writes its own reports, events and\n"
         "# presence. Nothing else: no other device's topics, no wildcards.\n"
         "pattern read outpost/v1/devices/%u/desired\n"
         "pattern read outpost/v1/devices/%u/ack\n"
         "pattern write outpost/v1/devices/%u/reported\n"
         "pattern write outpost/v1/devices/%u/events\n"
         "pattern write outpost/v1/devices/%u/presence\n";
}

namespace {
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}
}  // namespace

std::string RenderCtlYaml(const std::string& hub_url, const std::string& admin_token,
                          const std::string& ca_path) {
  std::ostringstream out;
  out << "# outpostctl connection, written by `outpost-hub init`.\n"
      << "# Use: outpostctl --config <this file> ...  (keep it private: mode 0600)\n"
      << "hub: " << Quote(hub_url) << "\n"
      << "token: " << Quote(admin_token) << "\n"
      << "# The hub CA; a relative path is relative to this file.\n"
      << "ca: " << Quote(ca_path) << "\n";
  return out.str();
}

}  // namespace outpost::hub
