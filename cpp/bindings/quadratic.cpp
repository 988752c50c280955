// Binding of the quadratic task family.
#include "fobmaml/tasks/quadratic.hpp"

#include <optional>

#include "common.hpp"

namespace fobmaml::bindings {
namespace {

// A quadratic task batch that keeps the NumPy arrays it reads alive.
struct QuadraticHandle {
  Array A, b, B, c;
  QuadraticTasks fam;

  static QuadraticTasks make(const Array& A, const Array& b, const std::optional<Array>& B,
                             const std::optional<Array>& c) {
    if (A.ndim() != 3 || A.shape(1) != A.shape(2))
      throw py::value_error("`A` must have shape (m, n, n) (got " + shape_str(A) + ")");
    const py::ssize_t m = A.shape(0), n = A.shape(1);
    require_shape(b, "b", {m, n});
    if (B.has_value() != c.has_value()) throw py::value_error("`B` and `c` must be given together");
    if (B) {
      require_shape(*B, "B", {m, n, n});
      require_shape(*c, "c", {m, n});
    }
    return QuadraticTasks(A.data(), b.data(), B ? B->data() : nullptr, c ? c->data() : nullptr, m, n);
  }

  QuadraticHandle(Array A_, Array b_, std::optional<Array> B_, std::optional<Array> c_)
      : A(A_), b(b_), B(B_ ? *B_ : Array()), c(c_ ? *c_ : Array()), fam(make(A_, b_, B_, c_)) {}
};

}  // namespace

void bind_quadratic(py::module_& m) {
  py::class_<QuadraticHandle>(m, "QuadraticTasks", py::module_local())
      .def(py::init<Array, Array, std::optional<Array>, std::optional<Array>>(), py::arg("A"), py::arg("b"),
           py::arg("B") = py::none(), py::arg("c") = py::none())
      .def_property_readonly("num_tasks", [](const QuadraticHandle& h) { return h.fam.num_tasks(); })
      .def_property_readonly("dim", [](const QuadraticHandle& h) { return h.fam.dim(); });
  def_entry_points<QuadraticHandle>(m);
}

}  // namespace fobmaml::bindings
