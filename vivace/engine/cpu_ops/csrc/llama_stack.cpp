// Every decoder layer of a Llama-family model on GGUF blocks, run in one call from Python.
//
// At one token a layer's arithmetic is a few tens of microseconds, and the Python around each of its
// ~20 tensor ops (slices, views, the op calls themselves) costs about as much again. This runs the same
// ops in the same order as LlamaLayer / PagedAttention / GatedMLP on the "cpu" kernel set (rms_norm,
// block_linear, rotary, store_kv, paged_attention, add_rms_norm, silu_mul, the residual add), so its
// result is bitwise the Python path's (tested); only the interpreter between them is gone. The model
// uses it only where that path would call exactly these ops (vivace/engine/models/llama.py).
#include <torch/extension.h>

#include <vector>

torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& tiles, int64_t qtype, int64_t N,
                           const c10::optional<torch::Tensor>& bias);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps);
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight,
                                                      double eps);
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor signed_sin, torch::Tensor positions);
torch::Tensor silu_mul(torch::Tensor gate_up);
void store_kv(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor slots);
torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor block_tables,
                              torch::Tensor spans, int64_t block_size, double scale, int64_t window,
                              c10::optional<torch::Tensor> tree);

namespace {

struct BlockMatrix {
  torch::Tensor tiles;
  int64_t qtype, rows;
  c10::optional<torch::Tensor> bias;
  torch::Tensor operator()(const torch::Tensor& x) const { return block_linear(x, tiles, qtype, rows, bias); }
};

struct Layer {
  torch::Tensor input_norm, post_norm;
  BlockMatrix qkv, o, gate_up, down;
  int64_t kv_index;  // this layer's K/V in the cache tensor: kv_cache[kv_index, 0 | 1]
};

}  // namespace

class LlamaStack {
 public:
  // Per layer, in order: norms (input, post-attention), then for qkv, o, gate_up, down: tiles, GGML type,
  // rows and bias (an empty tensor for none); kv_index: the layer's slot in the cache tensor.
  LlamaStack(std::vector<torch::Tensor> norms, std::vector<torch::Tensor> tiles, std::vector<int64_t> qtypes,
             std::vector<int64_t> rows, std::vector<torch::Tensor> biases, std::vector<int64_t> kv_index,
             torch::Tensor cos, torch::Tensor signed_sin, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
             double eps, double scale, int64_t block_size)
      : cos_(cos.contiguous()), sin_(signed_sin.contiguous()), heads_(num_heads), kv_heads_(num_kv_heads),
        head_dim_(head_dim), eps_(eps), scale_(scale), block_size_(block_size) {
    const size_t n = kv_index.size();
    TORCH_CHECK(norms.size() == 2 * n && tiles.size() == 4 * n && qtypes.size() == 4 * n && rows.size() == 4 * n &&
                    biases.size() == 4 * n,
                "LlamaStack: 2 norms and 4 matrices per layer");
    for (size_t i = 0; i < n; ++i) {
      BlockMatrix m[4];
      for (size_t j = 0; j < 4; ++j) {
        const size_t at = 4 * i + j;
        c10::optional<torch::Tensor> bias;
        if (biases[at].numel() > 0) bias = biases[at];
        m[j] = BlockMatrix{tiles[at], qtypes[at], rows[at], bias};
      }
      layers_.push_back(Layer{norms[2 * i], norms[2 * i + 1], m[0], m[1], m[2], m[3], kv_index[i]});
    }
  }

  // hidden [T, hidden] float32 in; the last layer's output out (before the final norm). The other
  // arguments are the step's: positions [T], the KV tensor [layers, 2, slots, KVH, D], and the
  // attention metadata (CpuAttentionMetadata's slot mapping, block tables and spans).
  torch::Tensor forward(torch::Tensor hidden, torch::Tensor positions, torch::Tensor kv_cache, torch::Tensor slots,
                        torch::Tensor block_tables, torch::Tensor spans) const {
    const int64_t T = hidden.size(0), q_size = heads_ * head_dim_, qk_end = q_size + kv_heads_ * head_dim_;
    for (const Layer& layer : layers_) {
      const torch::Tensor k_cache = kv_cache.select(0, layer.kv_index).select(0, 0);
      const torch::Tensor v_cache = kv_cache.select(0, layer.kv_index).select(0, 1);
      const torch::Tensor qkv = layer.qkv(rms_norm(hidden, layer.input_norm, eps_));
      const torch::Tensor qk = rotary(qkv.slice(1, 0, qk_end).view({T, heads_ + kv_heads_, head_dim_}), cos_, sin_,
                                      positions);
      const torch::Tensor v = qkv.slice(1, qk_end).view({T, kv_heads_, head_dim_});
      store_kv(qk.slice(1, heads_), v, k_cache, v_cache, slots);
      const torch::Tensor attn = paged_attention(qk.slice(1, 0, heads_).contiguous(), k_cache, v_cache, block_tables,
                                                 spans, block_size_, scale_, 0, c10::nullopt);
      auto [x, summed] = add_rms_norm(layer.o(attn.reshape({T, q_size})), hidden, layer.post_norm, eps_);
      hidden = summed + layer.down(silu_mul(layer.gate_up(x)));
    }
    return hidden;
  }

 private:
  std::vector<Layer> layers_;
  torch::Tensor cos_, sin_;
  int64_t heads_, kv_heads_, head_dim_;
  double eps_, scale_;
  int64_t block_size_;
};

void bind_llama_stack(pybind11::module& m) {
  pybind11::class_<LlamaStack>(m, "LlamaStack")
      .def(pybind11::init<std::vector<torch::Tensor>, std::vector<torch::Tensor>, std::vector<int64_t>,
                          std::vector<int64_t>, std::vector<torch::Tensor>, std::vector<int64_t>, torch::Tensor,
                          torch::Tensor, int64_t, int64_t, int64_t, double, double, int64_t>())
      .def("forward", &LlamaStack::forward, pybind11::call_guard<pybind11::gil_scoped_release>(),
           "every layer of the model on one step's tokens (the GIL released)");
}
