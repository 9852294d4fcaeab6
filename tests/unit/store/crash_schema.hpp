// The schema and row pattern shared by the crash test and its child process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shared/store/store.hpp"

namespace outpost::store::crash {

inline std::vector<Migration> Migrations() {
  return {
      {1,
       "CREATE TABLE rows(txn INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,"
       " PRIMARY KEY(txn, seq));"},
      {2, "CREATE INDEX rows_by_payload ON rows(payload);"},
  };
}

// Transaction `txn` inserts RowsIn(txn) rows, seq 0.., with Payload(txn, seq).
inline int RowsIn(std::int64_t txn) {
  return 1 + static_cast<int>(txn % 4);
}

inline std::string Payload(std::int64_t txn, int seq) {
  std::string tag = "t" + std::to_string(txn) + "s" + std::to_string(seq) + ";";
  std::string out;
  const std::size_t size = 40 + static_cast<std::size_t>((txn * 37 + seq * 11) % 400);
  while (out.size() < size)
    out += tag;
  return out;
}

}  // namespace outpost::store::crash
