// Wave planning: turn B programs into waves (layer, rows, steps).
//
// Invariants of the output: every (row, step) appears exactly once, a row's steps appear in
// increasing wave order, and a wave holds each row at most once. Rows inside a wave are sorted.
#include "scheduler.h"

#include <algorithm>
#include <numeric>
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

Units build_units(const int32_t* offsets, int64_t batch, const int32_t* layers, int64_t n_layers,
                  const int32_t* member_row, const int32_t* member_group, int64_t n_members) {
  int32_t unused = -1;
  check_programs(offsets, batch, layers, n_layers, -1, &unused);
  for (int64_t m = 0; m < n_members; ++m) {
    const int32_t r = member_row[m];
    if (r < 0 || r >= batch)
      throw std::invalid_argument("member " + std::to_string(m) + ": row " + std::to_string(r) + " outside [0, " +
                                  std::to_string(batch) + ")");
    if (member_group[m] < 0) throw std::invalid_argument("member " + std::to_string(m) + ": negative group");
    if (offsets[r + 1] == offsets[r])
      throw std::invalid_argument("member " + std::to_string(m) + ": row " + std::to_string(r) + " has an empty program");
  }
  auto begin = [&](int64_t m) { return layers + offsets[member_row[m]]; };
  auto end = [&](int64_t m) { return layers + offsets[member_row[m] + 1]; };
  // Members by (group, program in lexicographic order, member index).
  std::vector<int32_t> order(n_members);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    if (member_group[a] != member_group[b]) return member_group[a] < member_group[b];
    return std::lexicographical_compare(begin(a), end(a), begin(b), end(b));
  });
  Units u;
  std::vector<int32_t> member_start(n_members + 1, 0);
  for (int64_t m = 0; m < n_members; ++m)
    member_start[m + 1] = member_start[m] + (offsets[member_row[m] + 1] - offsets[member_row[m]]);
  u.member_units.assign(member_start[n_members], -1);
  u.member_lane.assign(n_members, -1);
  int32_t prev = -1;
  for (int32_t m : order) {
    const int32_t len = static_cast<int32_t>(end(m) - begin(m));
    int32_t lcp = 0;
    bool same = false;
    if (prev >= 0 && member_group[prev] == member_group[m]) {
      const int32_t prev_len = static_cast<int32_t>(end(prev) - begin(prev));
      const int32_t* a = begin(prev);
      const int32_t* b = begin(m);
      while (lcp < prev_len && lcp < len && a[lcp] == b[lcp]) ++lcp;
      same = lcp == len && lcp == prev_len;
    }
    int32_t* path = u.member_units.data() + member_start[m];
    if (prev >= 0) std::copy_n(u.member_units.data() + member_start[prev], lcp, path);
    if (same) {
      u.member_lane[m] = u.member_lane[prev];
    } else {  // sorted order: a strict prefix comes before its extensions, so lcp < len here
      const int32_t lane = static_cast<int32_t>(u.lane_end.size());
      for (int32_t s = lcp; s < len; ++s) {
        path[s] = static_cast<int32_t>(u.parent.size());
        u.parent.push_back(s == 0 ? -1 : path[s - 1]);
        u.layer.push_back(begin(m)[s]);
        u.group.push_back(member_group[m]);
        u.step.push_back(s);
        u.lane.push_back(lane);
      }
      u.lane_end.push_back(path[len - 1]);
      u.member_lane[m] = lane;
    }
    prev = m;
  }
  return u;
}

Waves plan_unit_waves(const int32_t* parent, const int32_t* layer, int64_t n_units, const int32_t* lane_end,
                      int64_t n_lanes, Policy policy, int32_t num_layers) {
  for (int64_t i = 0; i < n_units; ++i) {
    if (parent[i] < -1 || parent[i] >= i)
      throw std::invalid_argument("unit " + std::to_string(i) + ": parent " + std::to_string(parent[i]) +
                                  " must be -1 or an earlier unit");
  }
  // Each lane's chain of units, root first.
  std::vector<int32_t> chain_offsets(n_lanes + 1, 0), chain_units, chain_layers;
  std::vector<char> on_chain(n_units, 0);
  for (int64_t c = 0; c < n_lanes; ++c) {
    const int32_t e = lane_end[c];
    if (e < 0 || e >= n_units)
      throw std::invalid_argument("lane " + std::to_string(c) + ": end unit " + std::to_string(e) + " outside [0, " +
                                  std::to_string(n_units) + ")");
    const size_t first = chain_units.size();
    for (int32_t x = e; x >= 0; x = parent[x]) {
      chain_units.push_back(x);
      on_chain[x] = 1;
    }
    std::reverse(chain_units.begin() + first, chain_units.end());
    chain_offsets[c + 1] = static_cast<int32_t>(chain_units.size());
  }
  for (int64_t i = 0; i < n_units; ++i)
    if (!on_chain[i]) throw std::invalid_argument("unit " + std::to_string(i) + " lies on no lane");
  chain_layers.reserve(chain_units.size());
  for (int32_t x : chain_units) chain_layers.push_back(layer[x]);
  const Waves lanes = plan_waves(chain_offsets.data(), n_lanes, chain_layers.data(),
                                 static_cast<int64_t>(chain_layers.size()), policy, num_layers);
  // Keep each unit's first appearance; a later one in another wave would break the plan.
  Waves out;
  out.wave_offsets.push_back(0);
  out.rows.reserve(n_units);
  out.steps.reserve(n_units);
  std::vector<int32_t> wave_of(n_units, -1), depth(n_units, 0);
  for (int64_t i = 0; i < n_units; ++i) depth[i] = parent[i] < 0 ? 0 : depth[parent[i]] + 1;
  const int64_t n_waves = static_cast<int64_t>(lanes.wave_layers.size());
  for (int64_t w = 0; w < n_waves; ++w) {
    const size_t first = out.rows.size();
    for (int32_t j = lanes.wave_offsets[w]; j < lanes.wave_offsets[w + 1]; ++j) {
      const int32_t x = chain_units[chain_offsets[lanes.rows[j]] + lanes.steps[j]];
      if (wave_of[x] == w) continue;
      if (wave_of[x] >= 0)
        throw std::logic_error("unit " + std::to_string(x) + " planned in two waves (internal error)");
      wave_of[x] = static_cast<int32_t>(w);
      out.rows.push_back(x);
    }
    std::sort(out.rows.begin() + first, out.rows.end());
    for (size_t j = first; j < out.rows.size(); ++j) out.steps.push_back(depth[out.rows[j]]);
    out.wave_layers.push_back(lanes.wave_layers[w]);
    out.wave_offsets.push_back(static_cast<int32_t>(out.rows.size()));
  }
  return out;
}

}  // namespace polar
