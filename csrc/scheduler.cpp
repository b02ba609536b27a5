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
  if (name == "bound") return Policy::kBound;
  throw std::invalid_argument("unknown scheduling policy '" + name + "' (expected 'bound', 'lowest' or 'step')");
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

// Appends one wave made of `members` (distinct rows) at layer `layer`, advancing `pos`. Rows
// are emitted in increasing order via a bitset (O(n + B/64), no comparison sort).
class WaveEmitter {
 public:
  WaveEmitter(Waves& out, int64_t batch) : out_(out), bits_((batch + 63) / 64, 0) {}

  void emit(int32_t layer, const std::vector<int32_t>& members, std::vector<int32_t>& pos) {
    out_.wave_layers.push_back(layer);
    if (std::is_sorted(members.begin(), members.end())) {
      for (int32_t r : members) push(r, pos);
    } else {
      size_t lo = bits_.size(), hi = 0;
      for (int32_t r : members) {
        const size_t w = static_cast<size_t>(r) >> 6;
        bits_[w] |= uint64_t{1} << (r & 63);
        lo = std::min(lo, w);
        hi = std::max(hi, w);
      }
      for (size_t w = lo; w <= hi; ++w) {
        for (uint64_t word = bits_[w]; word != 0; word &= word - 1)
          push(static_cast<int32_t>((w << 6) | __builtin_ctzll(word)), pos);
        bits_[w] = 0;
      }
    }
    out_.wave_offsets.push_back(static_cast<int32_t>(out_.rows.size()));
  }

 private:
  void push(int32_t r, std::vector<int32_t>& pos) {
    out_.rows.push_back(r);
    out_.steps.push_back(pos[r]++);
  }

  Waves& out_;
  std::vector<uint64_t> bits_;
};

// `lowest`: repeatedly run the lowest layer index some ready row needs, with every row that
// needs it next.
void plan_lowest(const int32_t* offsets, int64_t batch, const int32_t* layers, int32_t n_distinct,
                 Waves& out) {
  WaveEmitter emitter(out, batch);
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
    emitter.emit(layer, cur, pos);
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
  WaveEmitter emitter(out, batch);
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
      emitter.emit(l, bucket[l], pos);
      bucket[l].clear();
    }
    next_active.clear();
    for (int32_t r : active)
      if (offsets[r] + pos[r] < offsets[r + 1]) next_active.push_back(r);
    active.swap(next_active);
  }
}

// `bound`: greedy on a lower bound of the waves still needed. With occ(r, l) the number of
// times row r still has to run layer l, every schedule needs at least
// LB = sum_l max_r occ(r, l) more waves. Running layer c (with every row whose next layer is c)
// clears the fraction ready_at_max(c) / holders_of_max(c) of the rows that hold layer c's
// maximum; at 1 the wave lowers LB. Each wave picks the candidate with the largest fraction,
// then the most rows, then the lowest index. For ascending (skip-only) programs the lowest
// candidate always has fraction 1, so the waves equal the number of distinct layers used, as
// with `lowest`.
//
// occ is never stored as a B x D table: rem[i] is how often layers[i] occurs in its row from
// entry i on, so a row at entry i has occ(r, layers[i]) = rem[i]. ready_at_max[l] (rows waiting
// for l that hold l's maximum) is kept up to date as rows move, so a wave costs O(D + its rows)
// and memory is O(N + D * longest program).
void plan_bound(const int32_t* offsets, int64_t batch, const int32_t* layers, int32_t n_distinct,
                Waves& out) {
  WaveEmitter emitter(out, batch);
  const int64_t D = n_distinct;
  const int64_t N = offsets[batch];
  std::vector<std::vector<int32_t>> bucket(D);
  std::vector<int32_t> pos(batch, 0), max_occ(D, 0), rem(N), seen(D, 0), cur;
  int32_t max_len = 0;
  for (int64_t r = 0; r < batch; ++r) max_len = std::max(max_len, offsets[r + 1] - offsets[r]);
  const int64_t K = max_len + 1;
  // at_count[l * K + k]: rows whose remaining count of layer l is k (k >= 1).
  std::vector<int32_t> at_count(D * K, 0);
  for (int64_t r = 0; r < batch; ++r) {
    for (int32_t i = offsets[r + 1] - 1; i >= offsets[r]; --i) rem[i] = ++seen[layers[i]];
    for (int32_t i = offsets[r]; i < offsets[r + 1]; ++i) {
      const int32_t l = layers[i];
      if (seen[l] == 0) continue;  // counted at the row's first entry of l
      ++at_count[l * K + seen[l]];
      max_occ[l] = std::max(max_occ[l], seen[l]);
      seen[l] = 0;
    }
    if (offsets[r + 1] > offsets[r]) bucket[layers[offsets[r]]].push_back(static_cast<int32_t>(r));
  }
  std::vector<int32_t> ready_at_max(D, 0);
  for (int64_t l = 0; l < D; ++l)
    for (int32_t r : bucket[l]) ready_at_max[l] += rem[offsets[r]] == max_occ[l];
  int64_t remaining = N;
  while (remaining > 0) {
    int32_t best = -1;
    int64_t best_ready = 0, best_holders = 1;
    size_t best_size = 0;
    for (int32_t l = 0; l < n_distinct; ++l) {
      const auto& b = bucket[l];
      if (b.empty()) continue;
      const int64_t ready = ready_at_max[l];
      const int64_t holders = at_count[l * K + max_occ[l]];
      // compare ready / holders with best_ready / best_holders exactly
      const int64_t lhs = ready * best_holders, rhs = best_ready * holders;
      if (best < 0 || lhs > rhs || (lhs == rhs && b.size() > best_size)) {
        best = l;
        best_ready = ready;
        best_holders = holders;
        best_size = b.size();
      }
    }
    cur.clear();
    cur.swap(bucket[best]);
    ready_at_max[best] = 0;
    for (int32_t r : cur) {  // occ(r, best) drops by one for every row of the wave
      const int32_t k = rem[offsets[r] + pos[r]];
      --at_count[best * K + k];
      if (k > 1) ++at_count[best * K + k - 1];
    }
    emitter.emit(best, cur, pos);
    remaining -= static_cast<int64_t>(cur.size());
    while (max_occ[best] > 0 && at_count[best * K + max_occ[best]] == 0) --max_occ[best];
    for (int32_t r : cur) {
      const int32_t i = offsets[r] + pos[r];
      if (i == offsets[r + 1]) continue;
      bucket[layers[i]].push_back(r);
      ready_at_max[layers[i]] += rem[i] == max_occ[layers[i]];
    }
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
  } else if (policy == Policy::kBound) {
    plan_bound(offsets, batch, layers, max_layer + 1, out);
  } else {
    plan_step(offsets, batch, layers, max_layer + 1, out);
  }
  return out;
}

}  // namespace polar
