// Wave planning: turn B programs into waves (layer, rows, steps).
//
// Invariants of the output: every (row, step) appears exactly once, a row's steps appear in
// increasing wave order, and a wave holds each row at most once. Rows inside a wave are sorted.
#include "scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace polar {

Policy parse_policy(const std::string& name) {
  if (name == "step") return Policy::kStep;
  if (name == "lowest") return Policy::kLowest;
  throw std::invalid_argument("unknown scheduling policy '" + name + "' (expected 'step' or 'lowest')");
}

namespace {

void check_programs(const int32_t* offsets, int64_t batch, const int32_t* layers, int64_t n_layers,
                    int32_t num_layers, int32_t* max_layer) {
  if (batch < 0) throw std::invalid_argument("negative batch size");
  if (offsets[0] != 0) throw std::invalid_argument("offsets[0] must be 0");
  for (int64_t r = 0; r < batch; ++r) {
    if (offsets[r + 1] < offsets[r])
      throw std::invalid_argument("offsets must be non-decreasing (row " + std::to_string(r) + ")");
  }
  if (offsets[batch] != n_layers)
    throw std::invalid_argument("offsets[B] must equal the number of layer entries");
  const int32_t limit = num_layers >= 0 ? num_layers : kMaxLayers;
  int32_t mx = -1;
  for (int64_t i = 0; i < n_layers; ++i) {
    if (layers[i] < 0 || layers[i] >= limit)
      throw std::invalid_argument("layer index " + std::to_string(layers[i]) + " at entry " + std::to_string(i) +
                                  " outside [0, " + std::to_string(limit) + ")");
    mx = std::max(mx, layers[i]);
  }
  *max_layer = mx;
}

// Appends one wave made of `members` (sorted in place) at layer `layer`, advancing `pos`.
inline void emit_wave(Waves& out, int32_t layer, std::vector<int32_t>& members, std::vector<int32_t>& pos) {
  std::sort(members.begin(), members.end());
  out.wave_layers.push_back(layer);
  for (int32_t r : members) {
    out.rows.push_back(r);
    out.steps.push_back(pos[r]++);
  }
  out.wave_offsets.push_back(static_cast<int32_t>(out.rows.size()));
}

// `lowest`: repeatedly run the lowest layer index some ready row needs, with every row that
// needs it next.
void plan_lowest(const int32_t* offsets, int64_t batch, const int32_t* layers, int32_t n_distinct,
                 Waves& out) {
  std::vector<std::vector<int32_t>> bucket(n_distinct);
  std::vector<int32_t> pos(batch, 0);
  std::vector<int32_t> cur;
  int32_t lo = n_distinct;
  int64_t remaining = 0;
  for (int64_t r = 0; r < batch; ++r) {
    int32_t len = offsets[r + 1] - offsets[r];
    if (len == 0) continue;
    int32_t l = layers[offsets[r]];
    bucket[l].push_back(static_cast<int32_t>(r));
    lo = std::min(lo, l);
    remaining += len;
  }
  while (remaining > 0) {
    while (bucket[lo].empty()) ++lo;
    const int32_t layer = lo;
    cur.clear();
    cur.swap(bucket[layer]);
    emit_wave(out, layer, cur, pos);
    remaining -= static_cast<int64_t>(cur.size());
    for (int32_t r : cur) {
      if (offsets[r] + pos[r] < offsets[r + 1]) {
        int32_t nl = layers[offsets[r] + pos[r]];
        bucket[nl].push_back(r);
        lo = std::min(lo, nl);
      }
    }
  }
}

// `step`: every active row advances one step per round; one wave per distinct next layer in
// the round, in increasing layer order.
void plan_step(const int32_t* offsets, int64_t batch, const int32_t* layers, int32_t n_distinct,
               Waves& out) {
  std::vector<std::vector<int32_t>> bucket(n_distinct);
  std::vector<int32_t> pos(batch, 0);
  std::vector<int32_t> active, next_active, touched;
  for (int64_t r = 0; r < batch; ++r)
    if (offsets[r + 1] > offsets[r]) active.push_back(static_cast<int32_t>(r));
  while (!active.empty()) {
    touched.clear();
    for (int32_t r : active) {
      int32_t l = layers[offsets[r] + pos[r]];
      if (bucket[l].empty()) touched.push_back(l);
      bucket[l].push_back(r);
    }
    std::sort(touched.begin(), touched.end());
    for (int32_t l : touched) {
      emit_wave(out, l, bucket[l], pos);
      bucket[l].clear();
    }
    next_active.clear();
    for (int32_t r : active)
      if (offsets[r] + pos[r] < offsets[r + 1]) next_active.push_back(r);
    active.swap(next_active);
  }
}

}  // namespace

Waves plan_waves(const int32_t* offsets, int64_t batch, const int32_t* layers, int64_t n_layers,
                 Policy policy, int32_t num_layers) {
  int32_t max_layer = -1;
  check_programs(offsets, batch, layers, n_layers, num_layers, &max_layer);
  Waves out;
  out.wave_offsets.push_back(0);
  out.rows.reserve(n_layers);
  out.steps.reserve(n_layers);
  if (n_layers == 0) return out;
  if (policy == Policy::kLowest) {
    plan_lowest(offsets, batch, layers, max_layer + 1, out);
  } else {
    plan_step(offsets, batch, layers, max_layer + 1, out);
  }
  return out;
}

}  // namespace polar
