#include "shared/core/result.hpp"

#include <cstring>

namespace outpost {

std::string_view ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kNotFound:
      return "not found";
    case Errc::kAlreadyExists:
      return "already exists";
    case Errc::kPermissionDenied:
      return "permission denied";
    case Errc::kUnauthenticated:
      return "unauthenticated";
    case Errc::kFailedPrecondition:
      return "failed precondition";
    case Errc::kResourceExhausted:
      return "resource exhausted";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kConflict:
      return "conflict";
    case Errc::kExpired:
      return "expired";
    case Errc::kCorrupt:
      return "corrupt";
    case Errc::kIo:
      return "i/o error";
    case Errc::kInternal:
      return "internal error";
  }
  return "unknown";
}

std::string Error::ToString() const {
  return std::string(ErrcName(code_)) + ": " + message_;
}

Error ErrnoError(std::string_view what, int err) {
  Errc code = Errc::kIo;
  switch (err) {
    case ENOENT:
      code = Errc::kNotFound;
      break;
    case EEXIST:
      code = Errc::kAlreadyExists;
      break;
    case EACCES:
    case EPERM:
      code = Errc::kPermissionDenied;
      break;
    case ENOSPC:
    case EDQUOT:
      code = Errc::kResourceExhausted;
      break;
    case ETIMEDOUT:
      code = Errc::kTimeout;
      break;
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
      code = Errc::kUnavailable;
      break;
    default:
      break;
  }
  return Error(code, std::string(what) + ": " + std::strerror(err));
}

}  // namespace outpost
