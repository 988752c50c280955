// Binding of the MLP task family.
#include "fobmaml/tasks/mlp.hpp"

#include <optional>
#include <vector>

#include "common.hpp"

namespace fobmaml::bindings {
namespace {

// An MLP task batch that keeps the NumPy arrays it reads alive. Targets are float
// arrays (m, k, d_out) for mse, or int64 labels (m, k) for xent.
struct MLPHandle {
  Array Xs, Xq;
  std::optional<Array> Ys, Yq;
  std::optional<IntArray> Ls, Lq;
  MLPTasks fam;

  static MLPTasks::Data data(const char* which, const Array& X, const std::optional<Array>& Y,
                             const std::optional<IntArray>& L, const std::vector<Index>& layers,
                             LossKind loss, py::ssize_t m) {
    const std::string x = std::string("X_") + which, y = std::string("Y_") + which;
    if (X.ndim() != 3)
      throw py::value_error("`" + x + "` must have shape (m, k, d_in) (got " + shape_str(X) + ")");
    const py::ssize_t k = X.shape(1);
    require_shape(X, x.c_str(), {m, k, layers.front()});
    MLPTasks::Data d;
    d.X = X.data();
    d.k = k;
    if (loss == LossKind::mse) {
      if (!Y) throw py::value_error("`" + y + "` (float targets) is required for loss='mse'");
      require_shape(*Y, y.c_str(), {m, k, layers.back()});
      d.Y = Y->data();
    } else {
      if (!L) throw py::value_error("`" + y + "` (int64 labels) is required for loss='xent'");
      require_shape(*L, y.c_str(), {m, k});
      const std::int64_t* p = L->data();
      for (py::ssize_t j = 0; j < m * k; ++j)
        if (p[j] < 0 || p[j] >= layers.back())
          throw py::value_error("`" + y + "` labels must be in [0, " + std::to_string(layers.back()) + ")");
      d.L = p;
    }
    if (k < 1) throw py::value_error("`" + x + "` must hold at least one sample per task (got k = 0)");
    return d;
  }

  static MLPTasks make(const Array& Xs, const std::optional<Array>& Ys, const std::optional<IntArray>& Ls,
                       const Array& Xq, const std::optional<Array>& Yq, const std::optional<IntArray>& Lq,
                       bool same_query, const std::vector<Index>& layers, Activation act, LossKind loss) {
    if (layers.size() < 2) throw py::value_error("`layers` must list at least [d_in, d_out]");
    for (Index d : layers)
      if (d < 1) throw py::value_error("`layers` entries must be >= 1");
    if (Xs.ndim() != 3)
      throw py::value_error("`X_support` must have shape (m, k, d_in) (got " + shape_str(Xs) + ")");
    const py::ssize_t m = Xs.shape(0);
    if (m < 1) throw py::value_error("`X_support` must hold at least one task");
    return MLPTasks(data("support", Xs, Ys, Ls, layers, loss, m), data("query", Xq, Yq, Lq, layers, loss, m),
                    same_query, m, layers, act, loss);
  }

  MLPHandle(Array Xs_, std::optional<Array> Ys_, std::optional<IntArray> Ls_, Array Xq_,
            std::optional<Array> Yq_, std::optional<IntArray> Lq_, bool same_query, std::vector<Index> layers,
            Activation act, LossKind loss)
      : Xs(Xs_),
        Xq(Xq_),
        Ys(Ys_),
        Yq(Yq_),
        Ls(Ls_),
        Lq(Lq_),
        fam(make(Xs_, Ys_, Ls_, Xq_, Yq_, Lq_, same_query, layers, act, loss)) {}
};

}  // namespace

void bind_mlp(py::module_& m) {
  py::enum_<Activation>(m, "Activation", py::module_local())
      .value("relu", Activation::relu)
      .value("tanh", Activation::tanh);
  py::enum_<LossKind>(m, "Loss", py::module_local())
      .value("mse", LossKind::mse)
      .value("xent", LossKind::xent);
  py::class_<MLPHandle>(m, "MLPTasks", py::module_local())
      .def(py::init<Array, std::optional<Array>, std::optional<IntArray>, Array, std::optional<Array>,
                    std::optional<IntArray>, bool, std::vector<Index>, Activation, LossKind>(),
           py::arg("X_support"), py::arg("Y_support"), py::arg("L_support"), py::arg("X_query"),
           py::arg("Y_query"), py::arg("L_query"), py::arg("same_query"), py::arg("layers"),
           py::arg("activation"), py::arg("loss"))
      .def_property_readonly("num_tasks", [](const MLPHandle& h) { return h.fam.num_tasks(); })
      .def_property_readonly("dim", [](const MLPHandle& h) { return h.fam.dim(); });
  def_entry_points<MLPHandle>(m);
}

}  // namespace fobmaml::bindings
