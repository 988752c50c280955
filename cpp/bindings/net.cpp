// Binding of the sequential-network task family: the layer specs, shape inference,
// prediction, and the task batch. The shape checks live in nn::Network (one place); this
// file turns their std::invalid_argument into ValueError, naming the array they concern.
#include "fobmaml/tasks/net.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"

namespace fobmaml::bindings {
namespace {

using nn::LayerKind;
using nn::LayerSpec;
using nn::Network;
using nn::Shape;

// The per-sample shape of an (..., *sample) array whose first `lead` dimensions index
// samples: (d) is flat, (C, L) a signal.
Shape sample_shape(const py::array& X, const std::string& name, int lead) {
  const py::ssize_t nd = X.ndim() - lead;
  if (nd == 1) return Shape::vector(X.shape(lead));
  if (nd == 2) return Shape::signal(X.shape(lead), X.shape(lead + 1));
  throw py::value_error(
      "`" + name + "` must have " + std::to_string(lead + 1) + " or " + std::to_string(lead + 2) +
      " dimensions: samples of shape (features,) or (channels, length) (got " + shape_str(X) + ")");
}

// The network for samples shaped like X's trailing dimensions; a mismatch names X.
Network network_for(const std::vector<LayerSpec>& layers, const py::array& X, const std::string& name,
                    int lead) {
  const Shape in = sample_shape(X, name, lead);
  try {
    return Network(layers, in);
  } catch (const std::invalid_argument& e) {
    throw py::value_error("`" + name + "` has samples of shape " + in.str() +
                          ", which the network cannot take: " + e.what());
  }
}

// A network task batch that keeps the NumPy arrays it reads alive. Targets are float
// arrays (m, k, d_out) for mse, or int64 labels (m, k) for xent.
struct NetHandle {
  Array Xs, Xq;
  std::optional<Array> Ys, Yq;
  std::optional<IntArray> Ls, Lq;
  NetTasks fam;

  static NetTasks::Data data(const char* which, const Array& X, const std::optional<Array>& Y,
                             const std::optional<IntArray>& L, const Network& net, LossKind loss,
                             py::ssize_t m) {
    const std::string x = std::string("X_") + which, y = std::string("Y_") + which;
    if (X.ndim() < 3)
      throw py::value_error("`" + x + "` must have shape (m, k, *sample_shape) (got " + shape_str(X) + ")");
    if (X.shape(0) != m)
      throw py::value_error("`" + x + "` must hold the same " + std::to_string(m) +
                            " tasks as `X_support` (got " + shape_str(X) + ")");
    const Shape got = sample_shape(X, x, 2), want = net.shape(0);
    if (got.flat != want.flat || got.channels != want.channels || got.length != want.length)
      throw py::value_error("`" + x + "` must have samples of shape " + net.shape(0).str() +
                            ", as `X_support` (got " + shape_str(X) + ")");
    const py::ssize_t k = X.shape(1);
    if (k < 1) throw py::value_error("`" + x + "` must hold at least one sample per task (got k = 0)");
    const Index dout = net.output_size();
    NetTasks::Data d;
    d.X = X.data();
    d.k = k;
    if (loss == LossKind::mse) {
      if (!Y) throw py::value_error("`" + y + "` (float targets) is required for loss='mse'");
      require_shape(*Y, y.c_str(), {m, k, dout});
      d.Y = Y->data();
    } else {
      if (!L) throw py::value_error("`" + y + "` (int64 labels) is required for loss='xent'");
      require_shape(*L, y.c_str(), {m, k});
      const std::int64_t* p = L->data();
      for (py::ssize_t j = 0; j < m * k; ++j)
        if (p[j] < 0 || p[j] >= dout)
          throw py::value_error("`" + y + "` labels must be in [0, " + std::to_string(dout) +
                                ") for a network with " + std::to_string(dout) + " outputs (got " +
                                std::to_string(p[j]) + ")");
      d.L = p;
    }
    return d;
  }

  static NetTasks make(const Array& Xs, const std::optional<Array>& Ys, const std::optional<IntArray>& Ls,
                       const Array& Xq, const std::optional<Array>& Yq, const std::optional<IntArray>& Lq,
                       bool same_query, const std::vector<LayerSpec>& layers, LossKind loss) {
    if (Xs.ndim() < 3)
      throw py::value_error("`X_support` must have shape (m, k, *sample_shape) (got " + shape_str(Xs) + ")");
    const py::ssize_t m = Xs.shape(0);
    if (m < 1)
      throw py::value_error("`X_support` must hold at least one task (got shape " + shape_str(Xs) + ")");
    Network net = network_for(layers, Xs, "X_support", 2);
    if (net.num_params() < 1) throw py::value_error("`net` has no parameters to meta-learn");
    const NetTasks::Data s = data("support", Xs, Ys, Ls, net, loss, m);
    const NetTasks::Data q = data("query", Xq, Yq, Lq, net, loss, m);
    return NetTasks(s, q, same_query, m, std::move(net), loss);
  }

  NetHandle(Array Xs_, std::optional<Array> Ys_, std::optional<IntArray> Ls_, Array Xq_,
            std::optional<Array> Yq_, std::optional<IntArray> Lq_, bool same_query,
            std::vector<LayerSpec> layers, LossKind loss)
      : Xs(Xs_),
        Xq(Xq_),
        Ys(Ys_),
        Yq(Yq_),
        Ls(Ls_),
        Lq(Lq_),
        fam(make(Xs_, Ys_, Ls_, Xq_, Yq_, Lq_, same_query, layers, loss)) {}
};

py::tuple shape_tuple(const Shape& s) {
  if (s.flat) return py::make_tuple(s.known() ? py::object(py::int_(s.channels)) : py::object(py::none()));
  return py::make_tuple(s.channels, s.length >= 0 ? py::object(py::int_(s.length)) : py::object(py::none()));
}

// (shapes of boundaries 0..L, [(weight offset, weight size, bias offset, bias size)] per
// layer, number of parameters). Without an input shape, the one the first layer implies.
py::tuple describe(const std::vector<LayerSpec>& layers, const std::optional<std::vector<Index>>& input) {
  Shape in;
  if (input) {
    if (input->size() == 1)
      in = Shape::vector((*input)[0]);
    else if (input->size() == 2)
      in = Shape::signal((*input)[0], (*input)[1]);
    else
      throw py::value_error("`input_shape` must be (features,) or (channels, length)");
    for (Index d : *input)
      if (d < 1) throw py::value_error("`input_shape` entries must be >= 1");
  } else {
    in = Network::implied_input(layers);
  }
  const Network net(layers, in);
  py::list shapes, params;
  for (Index b = 0; b <= net.num_layers(); ++b) shapes.append(shape_tuple(net.shape(b)));
  for (Index l = 0; l < net.num_layers(); ++l) {
    const LayerSpec& s = net.layer(l);
    params.append(py::make_tuple(net.weight_offset(l), s.weight_size(), net.bias_offset(l), s.bias_size()));
  }
  return py::make_tuple(shapes, params, net.num_params());
}

// The network's outputs (k, d_out) for inputs X (k, *sample_shape) at params.
Array predict(const std::vector<LayerSpec>& layers, const Array& params, const Array& X) {
  if (X.ndim() < 2)
    throw py::value_error("`X` must have shape (k, *sample_shape) (got " + shape_str(X) + ")");
  const Network net = network_for(layers, X, "X", 1);
  require_shape(params, "params", {net.num_params()});
  const py::ssize_t k = X.shape(0);
  const Index dout = net.output_size();
  Array out({k, static_cast<py::ssize_t>(dout)});
  if (k == 0) return out;
  // A task batch of one task whose support set is X (no targets are read).
  NetTasks::Data d;
  d.X = X.data();
  d.k = k;
  const NetTasks fam(d, d, true, 1, net, LossKind::mse);
  {
    py::gil_scoped_release release;
    auto ws = fam.make_workspace(FamilyOptions{});
    Eigen::Map<Mat> o(out.mutable_data(), dout, k);  // (k, d_out) row-major = d_out x k column-major
    fam.predict(X.data(), k, Eigen::Map<const Vec>(params.data(), net.num_params()), o, ws);
  }
  return out;
}

}  // namespace

void bind_net(py::module_& m) {
  py::enum_<LossKind>(m, "Loss", py::module_local())
      .value("mse", LossKind::mse)
      .value("xent", LossKind::xent);
  py::enum_<LayerKind>(m, "LayerKind", py::module_local())
      .value("linear", LayerKind::linear)
      .value("conv1d", LayerKind::conv1d)
      .value("relu", LayerKind::relu)
      .value("tanh", LayerKind::tanh)
      .value("maxpool1d", LayerKind::maxpool1d)
      .value("avgpool1d", LayerKind::avgpool1d)
      .value("flatten", LayerKind::flatten);
  py::class_<LayerSpec>(m, "LayerSpec", py::module_local())
      .def(py::init([](LayerKind kind, Index in, Index out, Index kernel, Index stride, Index pad_left,
                       Index pad_right, bool bias) {
             return LayerSpec{kind, in, out, kernel, stride, pad_left, pad_right, bias};
           }),
           py::arg("kind"), py::arg("in_size") = 0, py::arg("out_size") = 0, py::arg("kernel") = 1,
           py::arg("stride") = 1, py::arg("pad_left") = 0, py::arg("pad_right") = 0, py::arg("bias") = true)
      .def_readonly("kind", &LayerSpec::kind)
      .def_readonly("in_size", &LayerSpec::in)
      .def_readonly("out_size", &LayerSpec::out)
      .def_readonly("kernel", &LayerSpec::kernel)
      .def_readonly("stride", &LayerSpec::stride)
      .def_readonly("pad_left", &LayerSpec::pad_left)
      .def_readonly("pad_right", &LayerSpec::pad_right)
      .def_readonly("bias", &LayerSpec::bias);
  m.def("net_describe", &describe, py::arg("layers"), py::arg("input_shape") = py::none(),
        "Shapes of every boundary, per-layer parameter offsets and sizes, and the number of parameters.");
  m.def("net_predict", &predict, py::arg("layers"), py::arg("params"), py::arg("X"),
        "The network's outputs (k, d_out) for the inputs X (k, *sample_shape).");
  py::class_<NetHandle>(m, "NetTasks", py::module_local())
      .def(py::init<Array, std::optional<Array>, std::optional<IntArray>, Array, std::optional<Array>,
                    std::optional<IntArray>, bool, std::vector<LayerSpec>, LossKind>(),
           py::arg("X_support"), py::arg("Y_support"), py::arg("L_support"), py::arg("X_query"),
           py::arg("Y_query"), py::arg("L_query"), py::arg("same_query"), py::arg("layers"), py::arg("loss"))
      .def_property_readonly("num_tasks", [](const NetHandle& h) { return h.fam.num_tasks(); })
      .def_property_readonly("dim", [](const NetHandle& h) { return h.fam.dim(); });
  def_entry_points<NetHandle>(m);
}

}  // namespace fobmaml::bindings
