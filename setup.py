"""Build the compiled wave scheduler `polar._C` (a torch C++ extension, built with ninja)."""
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

setup(
    ext_modules=[
        CppExtension(
            name="polar._C",
            sources=["csrc/scheduler.cpp", "csrc/bindings.cpp"],
            extra_compile_args=["-O3", "-std=c++17"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
