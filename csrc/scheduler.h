// Wave scheduler for heterogeneous programs of layers (docs/architecture.md section 6).
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

// Shared units (docs/architecture.md section 9). A *member* is a (row, group) pair: the row's program run
// on the columns of the group (a prompt-tree node, or a decode history). Members of one group
// whose programs share the prefix pi[:k] share the state after step k: that state is one *unit*
// (a node of the group's program trie). Units are numbered in creation order (a parent before
// its children); inside a group, distinct programs are visited in lexicographic order and each
// one is a *lane* (a chain of units from a root to the program's last unit). A unit's lane is
// the first (lexicographically smallest) program through it, so a program that is a prefix of
// another owns the lane of its last unit and each unit's first child continues its lane.
struct Units {
  std::vector<int32_t> parent;        // per unit: parent unit, -1 at step 0
  std::vector<int32_t> layer;         // per unit: the layer it applies
  std::vector<int32_t> group;         // per unit: its group
  std::vector<int32_t> step;          // per unit: its program step (depth in the trie - 1)
  std::vector<int32_t> lane;          // per unit: its lane (lanes numbered group by group)
  std::vector<int32_t> member_units;  // CSR over members (lengths of their rows' programs): unit of (member, step)
  std::vector<int32_t> member_lane;   // per member: the lane of its program
  std::vector<int32_t> lane_end;      // per lane: its last unit
};

// Throws std::invalid_argument on malformed input (bad offsets, a member row outside [0, B), a
// negative group, an empty program of a member).
Units build_units(const int32_t* offsets, int64_t batch, const int32_t* layers, int64_t n_layers,
                  const int32_t* member_row, const int32_t* member_group, int64_t n_members);

// Waves over units: every unit exactly once, after its parent's wave, with the wave's layer.
// Plans the lanes (chains of units) with `policy` and keeps each unit's first appearance; lanes
// through a unit are at the same step with the same next layer until they part, so each unit
// lands in one wave. Units with equal layer sequences from the root (the same program prefix
// in different groups) land in the same wave. `rows` of the result hold unit ids (sorted in
// each wave) and `steps` their program steps. Throws std::invalid_argument on malformed input.
Waves plan_unit_waves(const int32_t* parent, const int32_t* layer, int64_t n_units, const int32_t* lane_end,
                      int64_t n_lanes, Policy policy, int32_t num_layers = -1);

}  // namespace polar
