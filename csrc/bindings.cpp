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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "polar compiled wave scheduler";
  m.def("plan_waves", &plan_waves, pybind11::arg("offsets"), pybind11::arg("layers"),
        pybind11::arg("policy"), pybind11::arg("num_layers") = -1,
        "Plan waves (policy: bound, lowest or step; polar.runtime.schedule.DEFAULT_POLICY is the default) for CSR-packed programs whose layer indices lie in [0, num_layers) "
        "(num_layers < 0: [0, 65536)). Returns int32 tensors "
        "(wave_layers[W], wave_offsets[W+1], rows[N], steps[N]). Raises ValueError on bad input.");
}
