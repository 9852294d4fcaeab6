// Small, careful file-system helpers shared by hub and agent.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "shared/core/result.hpp"

namespace outpost::fs {

// Reads a whole file, refusing files larger than `max_bytes`
// (kResourceExhausted) so that a hostile or corrupt file cannot exhaust memory.
Result<std::string> ReadFile(const std::string& path, std::size_t max_bytes = 16u << 20);

// Writes `data` so that readers see either the old file or the new one, never
// a mix, also across a crash: a temporary file in the same directory, fsync,
// rename over the target, fsync of the directory.
Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644);

// mkdir -p with the given mode for the directories it creates.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

bool Exists(const std::string& path);

// fsync of a directory, making renames and creations in it durable.
Status SyncDir(const std::string& dir);

// The directory part of a path ("." when there is none).
std::string DirName(const std::string& path);

// Joins two path parts with exactly one '/'.
std::string Join(std::string_view a, std::string_view b);

}  // namespace outpost::fs
