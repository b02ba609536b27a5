// Python bindings of the wave scheduler: polar._C.plan_waves.
#include <torch/extension.h>

#include <stdexcept>

#include "scheduler.h"

namespace {

torch::Tensor to_tensor(const std::vector<int32_t>& v) {
  auto t = torch::empty({static_cast<int64_t>(v.size())}, torch::kInt32);
  if (!v.empty()) std::memcpy(t.data_ptr<int32_t>(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> plan_waves(
    const torch::Tensor& offsets, const torch::Tensor& layers, const std::string& policy, int64_t num_layers) {
  TORCH_CHECK_VALUE(offsets.dim() == 1 && layers.dim() == 1, "offsets and layers must be 1-D");
  TORCH_CHECK_VALUE(offsets.scalar_type() == torch::kInt32 && layers.scalar_type() == torch::kInt32,
                    "offsets and layers must be int32");
  TORCH_CHECK_VALUE(offsets.numel() >= 1, "offsets must have B + 1 >= 1 entries");
  TORCH_CHECK_VALUE(num_layers <= polar::kMaxLayers, "num_layers must be <= ", polar::kMaxLayers);
  auto off = offsets.to(torch::kCPU).contiguous();
  auto lay = layers.to(torch::kCPU).contiguous();
  polar::Waves w;
  try {
    auto p = polar::parse_policy(policy);
    pybind11::gil_scoped_release no_gil;
    w = polar::plan_waves(off.data_ptr<int32_t>(), off.numel() - 1, lay.data_ptr<int32_t>(), lay.numel(), p,
                            static_cast<int32_t>(num_layers));
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
  return {to_tensor(w.wave_layers), to_tensor(w.wave_offsets), to_tensor(w.rows), to_tensor(w.steps)};
}

void check_int32_1d(const torch::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.scalar_type() == torch::kInt32, name, " must be a 1-D int32 tensor");
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor,
           torch::Tensor>
build_units(const torch::Tensor& offsets, const torch::Tensor& layers, const torch::Tensor& member_row,
            const torch::Tensor& member_group) {
  check_int32_1d(offsets, "offsets");
  check_int32_1d(layers, "layers");
  check_int32_1d(member_row, "member_row");
  check_int32_1d(member_group, "member_group");
  TORCH_CHECK_VALUE(offsets.numel() >= 1, "offsets must have B + 1 >= 1 entries");
  TORCH_CHECK_VALUE(member_row.numel() == member_group.numel(), "member_row and member_group differ in length");
  auto off = offsets.to(torch::kCPU).contiguous();
  auto lay = layers.to(torch::kCPU).contiguous();
  auto mrow = member_row.to(torch::kCPU).contiguous();
  auto mgrp = member_group.to(torch::kCPU).contiguous();
  polar::Units u;
  try {
    pybind11::gil_scoped_release no_gil;
    u = polar::build_units(off.data_ptr<int32_t>(), off.numel() - 1, lay.data_ptr<int32_t>(), lay.numel(),
                           mrow.data_ptr<int32_t>(), mgrp.data_ptr<int32_t>(), mrow.numel());
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
  return {to_tensor(u.parent), to_tensor(u.layer), to_tensor(u.group), to_tensor(u.step), to_tensor(u.lane),
          to_tensor(u.member_units), to_tensor(u.member_lane), to_tensor(u.lane_end)};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> plan_unit_waves(
    const torch::Tensor& parent, const torch::Tensor& layer, const torch::Tensor& lane_end, const std::string& policy,
    int64_t num_layers) {
  check_int32_1d(parent, "parent");
  check_int32_1d(layer, "layer");
  check_int32_1d(lane_end, "lane_end");
  TORCH_CHECK_VALUE(parent.numel() == layer.numel(), "parent and layer differ in length");
  TORCH_CHECK_VALUE(num_layers <= polar::kMaxLayers, "num_layers must be <= ", polar::kMaxLayers);
  auto par = parent.to(torch::kCPU).contiguous();
  auto lay = layer.to(torch::kCPU).contiguous();
  auto ends = lane_end.to(torch::kCPU).contiguous();
  polar::Waves w;
  try {
    auto p = polar::parse_policy(policy);
    pybind11::gil_scoped_release no_gil;
    w = polar::plan_unit_waves(par.data_ptr<int32_t>(), lay.data_ptr<int32_t>(), par.numel(),
                               ends.data_ptr<int32_t>(), ends.numel(), p, static_cast<int32_t>(num_layers));
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
  return {to_tensor(w.wave_layers), to_tensor(w.wave_offsets), to_tensor(w.rows), to_tensor(w.steps)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "polar compiled wave scheduler";
  m.def("plan_waves", &plan_waves, pybind11::arg("offsets"), pybind11::arg("layers"),
        pybind11::arg("policy"), pybind11::arg("num_layers") = -1,
        "Plan waves (policy: bound, lowest or step; polar.runtime.schedule.DEFAULT_POLICY is the default) for CSR-packed programs whose layer indices lie in [0, num_layers) "
        "(num_layers < 0: [0, 65536)). Returns int32 tensors "
        "(wave_layers[W], wave_offsets[W+1], rows[N], steps[N]). Raises ValueError on bad input.");
  m.def("build_units", &build_units, pybind11::arg("offsets"), pybind11::arg("layers"), pybind11::arg("member_row"),
        pybind11::arg("member_group"),
        "Shared units (program tries per group) of members (row, group) of CSR-packed programs. Returns int32 "
        "tensors (unit_parent[U], unit_layer[U], unit_group[U], unit_step[U], unit_lane[U], member_units[sum of "
        "the members' program lengths], member_lane[M], lane_end[lanes]). Raises ValueError on bad input.");
  m.def("plan_unit_waves", &plan_unit_waves, pybind11::arg("parent"), pybind11::arg("layer"), pybind11::arg("lane_end"),
        pybind11::arg("policy"), pybind11::arg("num_layers") = -1,
        "Plan waves over units (a forest given by parent[U], layer[U] and its lanes' last units). Returns int32 "
        "tensors (wave_layers[W], wave_offsets[W+1], units[U], steps[U]). Raises ValueError on bad input.");
}
