// The one error convention of Outpost: functions that can fail return
// Result<T>, which holds either a T or an Error (a code plus a message a
// person can read). No exception crosses a module boundary; adapters around
// libraries that throw catch and convert at the edge.
#pragma once

#include <cassert>
#include <concepts>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace outpost {

// Error codes are coarse on purpose: callers branch on the category, people
// read the message.
enum class Errc {
  kInvalidArgument,     // bad input from a caller or from the wire
  kNotFound,            // a thing that should exist does not
  kAlreadyExists,       // creating something that is already there
  kPermissionDenied,    // authenticated, but not allowed
  kUnauthenticated,     // bad or missing credentials (token, certificate)
  kFailedPrecondition,  // the system is not in a state that allows this
  kResourceExhausted,   // a size or count limit, a full disk
  kUnavailable,         // a peer or service cannot be reached right now
  kTimeout,             // a deadline passed
  kConflict,            // lost a race (e.g. the last use of a token)
  kExpired,             // valid once, not any more
  kCorrupt,             // stored or received data fails its checks
  kIo,                  // an operating system call failed
  kInternal,            // a bug or an impossible state
};

std::string_view ErrcName(Errc code);

class Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes the message: "loading config: no such file".
  Error WithContext(std::string_view context) const {
    return Error(code_, std::string(context) + ": " + message_);
  }

  // "<code name>: <message>", for logs.
  std::string ToString() const;

  bool operator==(const Error&) const = default;

 private:
  Errc code_;
  std::string message_;
};

// errno as an Error: "<what>: <strerror(err)>".
Error ErrnoError(std::string_view what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(const T& value) : v_(std::in_place_index<0>, value) {}        // NOLINT(implicit)
  Result(T&& value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  template <typename U>
  requires(std::constructible_from<T, U&&> && !std::same_as<std::remove_cvref_t<U>, T> &&
           !std::same_as<std::remove_cvref_t<U>, Error> &&
           !std::same_as<std::remove_cvref_t<U>, Result<T>>) Result(U&& value)
      : v_(std::in_place_index<0>, std::forward<U>(value)) {}            // NOLINT
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(implicit)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& {
    assert(!ok());
    return std::get<1>(v_);
  }
  Error&& error() && {
    assert(!ok());
    return std::get<1>(std::move(v_));
  }

  T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT(implicit)

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const& {
    assert(!ok());
    return *error_;
  }
  Error&& error() && {
    assert(!ok());
    return std::move(*error_);
  }

 private:
  std::optional<Error> error_;
};

using Status = Result<void>;

inline Status OkStatus() {
  return {};
}

}  // namespace outpost

#define OUTPOST_CONCAT_INNER(a, b) a##b
#define OUTPOST_CONCAT(a, b) OUTPOST_CONCAT_INNER(a, b)

// Returns the error of `expr` (a Result) from the enclosing function.
#define OUTPOST_TRY(expr)                                               \
  do {                                                                  \
    auto&& OUTPOST_CONCAT(outpost_try_, __LINE__) = (expr);             \
    if (!OUTPOST_CONCAT(outpost_try_, __LINE__).ok())                   \
      return std::move(OUTPOST_CONCAT(outpost_try_, __LINE__)).error(); \
  } while (0)

// Declares or assigns `lhs` from the value of `expr`, or returns its error.
#define OUTPOST_ASSIGN_OR_RETURN(lhs, expr)                           \
  auto OUTPOST_CONCAT(outpost_res_, __LINE__) = (expr);               \
  if (!OUTPOST_CONCAT(outpost_res_, __LINE__).ok())                   \
    return std::move(OUTPOST_CONCAT(outpost_res_, __LINE__)).error(); \
  lhs = std::move(OUTPOST_CONCAT(outpost_res_, __LINE__)).value()
