// The Python module of the C++ CPU ops: one binding per op; each op lives in its own source file.
#include <torch/extension.h>

torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor block_tables,
                              torch::Tensor spans, int64_t block_size, double scale, int64_t window,
                              c10::optional<torch::Tensor> tree);
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor weight_t, torch::Tensor scales, c10::optional<torch::Tensor> bias,
                          c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> col_sums);
std::tuple<torch::Tensor, torch::Tensor> pack_int8_weight(torch::Tensor weight_t);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps);
torch::Tensor argmax_rows(torch::Tensor x);
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps);
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor signed_sin, torch::Tensor positions);
torch::Tensor silu_mul(torch::Tensor gate_up);
void store_kv(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor slots);
void lora_add(torch::Tensor y, torch::Tensor x, torch::Tensor slots, torch::Tensor a, torch::Tensor b,
              torch::Tensor ranks, std::vector<int64_t> bounds, int64_t max_rank);

void bind_llama_stack(pybind11::module& m);

// Every op runs with the GIL released (its arguments are converted before): the server's event-loop thread
// sends the tokens of the last step while the engine thread computes the next.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.def("paged_attention", &paged_attention, no_gil, "paged attention of decode and prefill rows (CPU, float32)",
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"), py::arg("spans"),
        py::arg("block_size"), py::arg("scale"), py::arg("window") = 0, py::arg("tree") = py::none());
  m.def("int8_linear", &int8_linear, no_gil, "int8 linear with per-row activation scales (CPU)");
  m.def("pack_int8_weight", &pack_int8_weight, no_gil, "int8 weights packed for the small-row VNNI kernel, and column sums");
  m.def("rms_norm", &rms_norm, no_gil, "RMSNorm over the last dimension (CPU, float32)");
  m.def("argmax_rows", &argmax_rows, no_gil, "first index of each row's largest value (CPU, float32)");
  m.def("add_rms_norm", &add_rms_norm, no_gil, "RMSNorm of x + residual, and x + residual (CPU, float32)");
  m.def("rotary", &rotary, no_gil, "rotary embedding, rotate_half layout (CPU, float32)");
  m.def("silu_mul", &silu_mul, no_gil, "silu(gate) * up over [gate | up] rows (CPU, float32)");
  m.def("store_kv", &store_kv, no_gil, "write a step's K/V rows into the paged cache, converting to its dtype (CPU)");
  m.def("lora_add", &lora_add, no_gil, "add each token's own LoRA adapter product to y in place, gathered per row (CPU, float32)");
  bind_llama_stack(m);  // every layer of a Llama-family model on GGUF blocks in one call (llama_stack.cpp)
}
