// Wave scheduler for heterogeneous programs of layers (DESIGN.md section 4).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace polar {

// Waves in flat (CSR) form: wave w applies layer wave_layers[w] to the rows
// rows[wave_offsets[w] : wave_offsets[w+1]], row rows[j] being at program step steps[j].
struct Waves {
  std::vector<int32_t> wave_layers;
  std::vector<int32_t> wave_offsets;  // size W + 1, starts at 0
  std::vector<int32_t> rows;          // size N
  std::vector<int32_t> steps;         // size N
};

enum class Policy { kStep, kLowest, kBound };

Policy parse_policy(const std::string& name);

// Largest layer count accepted when the caller does not give one (bounds the bucket arrays).
constexpr int32_t kMaxLayers = 1 << 16;

// Programs in CSR form: row r runs layers[offsets[r] : offsets[r+1]]; offsets has B + 1
// entries, offsets[0] == 0, non-decreasing, offsets[B] == n_layers; layers lie in
// [0, num_layers) (num_layers < 0: in [0, kMaxLayers)).
// Throws std::invalid_argument on malformed input.
Waves plan_waves(const int32_t* offsets, int64_t batch, const int32_t* layers, int64_t n_layers,
                 Policy policy, int32_t num_layers = -1);

}  // namespace polar
