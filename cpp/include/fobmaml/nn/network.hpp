// A sequential network: its layers, the activation shape at every boundary, and the
// layout of its flat parameter vector (docs/estimators.md, "Sequential network").
//
// Layers follow torch.nn's semantics: Linear(in, out), Conv1d(in_channels, out_channels,
// kernel_size, stride, padding) with zero padding, ReLU, Tanh, MaxPool1d and AvgPool1d
// (no padding) and Flatten (channel-major, as torch flattens (C, L)). Parameters are, layer
// by layer, the weight ((out, in) for Linear, (out_channels, in_channels, kernel_size) for
// Conv1d, row-major) and then the bias: torch.nn.utils.parameters_to_vector of the same
// layers in an nn.Sequential.
//
// Shapes are per sample: (C, L) for a signal of C channels and length L, or (d) for a flat
// vector. The shapes are inferred here, once, from the input shape; every mismatch is an
// std::invalid_argument naming the layer (the bindings turn it into a ValueError).
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../types.hpp"

namespace fobmaml::nn {

enum class LayerKind : int { linear = 0, conv1d, relu, tanh, maxpool1d, avgpool1d, flatten };

inline const char* layer_name(LayerKind k) {
  switch (k) {
    case LayerKind::linear:
      return "Linear";
    case LayerKind::conv1d:
      return "Conv1d";
    case LayerKind::relu:
      return "ReLU";
    case LayerKind::tanh:
      return "Tanh";
    case LayerKind::maxpool1d:
      return "MaxPool1d";
    case LayerKind::avgpool1d:
      return "AvgPool1d";
    case LayerKind::flatten:
      return "Flatten";
  }
  return "?";
}

// One layer's constructor arguments. `in`/`out` are features (Linear) or channels (Conv1d);
// `kernel`/`stride` serve Conv1d and the pools; the padding may be asymmetric (Conv1d's
// padding="same" with an even kernel pads one more on the right, as torch does).
struct LayerSpec {
  LayerKind kind = LayerKind::relu;
  Index in = 0, out = 0;
  Index kernel = 1, stride = 1, pad_left = 0, pad_right = 0;
  bool bias = true;

  bool has_params() const { return kind == LayerKind::linear || kind == LayerKind::conv1d; }
  Index weight_size() const {
    return kind == LayerKind::linear ? out * in : kind == LayerKind::conv1d ? out * in * kernel : 0;
  }
  Index bias_size() const { return has_params() && bias ? out : 0; }
};

// A per-sample activation shape: `flat` (a vector of `channels` entries, length 1) or a
// signal of `channels` x `length`. A length of -1 is unknown (a net checked before data).
struct Shape {
  Index channels = 0;
  Index length = 1;
  bool flat = true;

  static Shape vector(Index d) { return Shape{d, 1, true}; }
  static Shape signal(Index c, Index l) { return Shape{c, l, false}; }
  bool known() const { return channels >= 0 && length >= 0; }
  Index size() const { return known() ? channels * length : -1; }
  std::string str() const {
    if (flat) return "(" + (known() ? std::to_string(channels) : std::string("?")) + ",)";
    return "(" + std::to_string(channels) + ", " + (length >= 0 ? std::to_string(length) : "L") + ")";
  }
};

class Network {
 public:
  // Infers every boundary's shape from `input` (boundary 0) through the layers; throws
  // std::invalid_argument if a layer cannot take its input. An input of unknown length
  // checks what can be checked without data (channels and features that must chain).
  Network(std::vector<LayerSpec> layers, Shape input) : layers_(std::move(layers)) {
    if (layers_.empty()) throw std::invalid_argument("a network needs at least one layer");
    shapes_.push_back(input);
    Index off = 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const LayerSpec& s = layers_[l];
      check_args(l, s);
      shapes_.push_back(output_shape(l, s, shapes_.back()));
      woff_.push_back(off);
      off += s.weight_size();
      boff_.push_back(off);
      off += s.bias_size();
    }
    n_ = off;
    if (!shapes_.back().flat)
      throw std::invalid_argument("the network's output must be flat (one vector per sample), but it is " +
                                  shapes_.back().str() + ": end it with Flatten or Linear");
  }

  // The input shape a network's first layer implies (the length of a signal is unknown).
  static Shape implied_input(const std::vector<LayerSpec>& layers) {
    if (layers.empty()) throw std::invalid_argument("a network needs at least one layer");
    const LayerSpec& s = layers.front();
    switch (s.kind) {
      case LayerKind::linear:
        return Shape::vector(s.in);
      case LayerKind::conv1d:
        return Shape::signal(s.in, -1);
      default:
        throw std::invalid_argument(std::string("layer 0 (") + layer_name(s.kind) +
                                    ") does not fix the input shape: pass the input shape, or start the "
                                    "network with Linear or Conv1d");
    }
  }

  Index num_layers() const { return static_cast<Index>(layers_.size()); }
  Index num_params() const { return n_; }
  const LayerSpec& layer(Index l) const { return layers_[static_cast<std::size_t>(l)]; }
  const std::vector<LayerSpec>& layers() const { return layers_; }
  // Boundary b = 0..L: the input of layer b (b < L), the output of layer b - 1 (b > 0).
  const Shape& shape(Index b) const { return shapes_[static_cast<std::size_t>(b)]; }
  Index weight_offset(Index l) const { return woff_[static_cast<std::size_t>(l)]; }
  Index bias_offset(Index l) const { return boff_[static_cast<std::size_t>(l)]; }
  Index input_size() const { return shape(0).size(); }
  Index output_size() const { return shape(num_layers()).size(); }

  // Storage of boundary b for k samples: rows x (cols_per_sample * k), column-major. A
  // signal (C, L) is stored channel-fastest, sample by sample: entry (c, s L + t). A flat
  // vector (d) is one column per sample.
  Index rows(Index b) const { return shape(b).channels; }
  Index cols_per_sample(Index b) const { return shape(b).flat ? 1 : shape(b).length; }

  // Multiply-adds of one forward pass of one sample through the layers with parameters.
  double macs_per_sample() const {
    double macs = 0.0;
    for (Index l = 0; l < num_layers(); ++l) {
      const LayerSpec& s = layer(l);
      if (s.kind == LayerKind::linear) macs += static_cast<double>(s.out * s.in);
      if (s.kind == LayerKind::conv1d)
        macs += static_cast<double>(s.out * s.in * s.kernel * shape(l + 1).length);
    }
    return macs;
  }

 private:
  static std::string where(std::size_t l, const LayerSpec& s) {
    return "layer " + std::to_string(l) + " (" + layer_name(s.kind) + ")";
  }

  static void check_args(std::size_t l, const LayerSpec& s) {
    const std::string w = where(l, s);
    if (s.has_params() && (s.in < 1 || s.out < 1))
      throw std::invalid_argument(w + ": sizes must be >= 1 (got " + std::to_string(s.in) + ", " +
                                  std::to_string(s.out) + ")");
    if (s.kind == LayerKind::conv1d || s.kind == LayerKind::maxpool1d || s.kind == LayerKind::avgpool1d) {
      if (s.kernel < 1) throw std::invalid_argument(w + ": kernel_size must be >= 1");
      if (s.stride < 1) throw std::invalid_argument(w + ": stride must be >= 1");
      if (s.pad_left < 0 || s.pad_right < 0) throw std::invalid_argument(w + ": padding must be >= 0");
    }
  }

  static Shape output_shape(std::size_t l, const LayerSpec& s, const Shape& in) {
    const std::string w = where(l, s);
    switch (s.kind) {
      case LayerKind::linear:
        if (!in.flat)
          throw std::invalid_argument(w + " needs a flat input (one vector per sample), but its input is " +
                                      in.str() + ": put Flatten before it");
        if (in.known() && in.channels != s.in)
          throw std::invalid_argument(w + " expects " + std::to_string(s.in) +
                                      " input features, but the layers before it give " +
                                      std::to_string(in.channels) + " (shape " + in.str() + ")");
        return Shape::vector(s.out);
      case LayerKind::conv1d: {
        if (in.flat)
          throw std::invalid_argument(w + " needs a signal input (channels, length), but its input is flat " +
                                      in.str());
        if (in.channels != s.in)
          throw std::invalid_argument(w + " expects " + std::to_string(s.in) +
                                      " input channels, but its input has " + std::to_string(in.channels) +
                                      " (shape " + in.str() + ")");
        if (in.length < 0) return Shape::signal(s.out, -1);
        const Index padded = in.length + s.pad_left + s.pad_right;
        if (padded < s.kernel)
          throw std::invalid_argument(w + ": kernel_size " + std::to_string(s.kernel) +
                                      " is larger than the padded input length " + std::to_string(padded) +
                                      " (input shape " + in.str() + ")");
        return Shape::signal(s.out, (padded - s.kernel) / s.stride + 1);
      }
      case LayerKind::maxpool1d:
      case LayerKind::avgpool1d: {
        if (in.flat)
          throw std::invalid_argument(w + " needs a signal input (channels, length), but its input is flat " +
                                      in.str());
        if (in.length < 0) return Shape::signal(in.channels, -1);
        if (in.length < s.kernel)
          throw std::invalid_argument(w + ": kernel_size " + std::to_string(s.kernel) +
                                      " is larger than the input length " + std::to_string(in.length) +
                                      " (input shape " + in.str() + ")");
        return Shape::signal(in.channels, (in.length - s.kernel) / s.stride + 1);
      }
      case LayerKind::flatten:
        if (in.flat) return in;
        return in.length < 0 ? Shape{-1, 1, true} : Shape::vector(in.channels * in.length);
      case LayerKind::relu:
      case LayerKind::tanh:
        return in;
    }
    return in;
  }

  std::vector<LayerSpec> layers_;
  std::vector<Shape> shapes_;
  std::vector<Index> woff_, boff_;
  Index n_ = 0;
};

}  // namespace fobmaml::nn
