"""Build hook for the optional native commit pass of the proofs engine (project metadata: pyproject.toml).

`proofs._commit` is compiled from proofs/_commit.c when a C compiler and the Python headers are
present; without them the build goes on and `proofs.engine` uses its pure-Python commit pass.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("proofs._commit", sources=["proofs/_commit.c"], optional=True),
    ]
)
